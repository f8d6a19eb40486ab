"""The GAN systems of configs/dla_cdcgan.py and configs/pix2pix_improver.py.

The order of the sub-steps (D, then G against the new D, then the Improver),
what each one may change, one step on 8 devices against 1, and smoke runs
of the training job.
"""

import json

import jax
import numpy as np
import pytest

from jaxcolor import systems
from jaxcolor import train
from jaxcolor.systems import base

from helpers import (assert_networks_close, assert_same_steps,
                     init_host_state, load_config, random_batch, run_steps)

# One worker runs the whole file: its tests share module-scoped results
# (`python -m pytest -n 2` distributes with --dist loadgroup, pyproject.toml).
pytestmark = pytest.mark.xdist_group("systems_gan")

CONFIGS = ("configs/dla_cdcgan.py", "configs/pix2pix_improver.py")


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def changed_networks(before, after, networks) -> set[str]:
  """Networks with any parameter, statistic or optimizer moment changed."""
  return {name for name in networks
          if any(not np.array_equal(a, b) for a, b in zip(
              jax.tree.leaves(before[name]), jax.tree.leaves(after[name])))}


@pytest.fixture(scope="module")
def one_device_step():
  """path -> (config, initial host state, `run_steps` of one step on one
  device); each computed once and shared by the tests below."""
  cache = {}

  def get(path):
    if path not in cache:
      config = load_config(path)
      state = init_host_state(config)
      one_device = run_steps(config, jax.devices()[:1], 1,
                             initial_state=state)
      cache[path] = (config, state, one_device)
    return cache[path]
  return get


def test_improver_step_order_and_isolation(one_device_step):
  config, state0, (full, (metrics,)) = one_device_step(
      "configs/pix2pix_improver.py")
  system = systems.create(config)
  networks = system.networks
  # The batch and randomness of `run_steps`' first step.
  batch = random_batch(config.batch_size, config.image_size, seed=0)
  rng = jax.random.split(jax.random.key(config.seed))[1]
  lightness, ab = system.lab_pair(batch)
  dropout_rng = base.step_rng(rng, state0["step"])

  # The step taken apart: one jitted sub-step at a time, on the whole state.
  @jax.jit
  def update_discriminator(state):
    fake_ab, _, _ = system.generator_forward(state["generator"], lightness,
                                             dropout_rng)
    fake_ab = jax.lax.stop_gradient(fake_ab)
    discriminator, _ = system.update_discriminator(
        state["discriminator"], lightness, ab, fake_ab)
    return dict(state, discriminator=discriminator), fake_ab

  @jax.jit
  def update_generator(state):
    fake_ab, pullback, stats = system.generator_forward(
        state["generator"], lightness, dropout_rng)
    generator, metrics = system.update_generator(
        state["generator"], pullback, stats, state["discriminator"],
        lightness, ab, fake_ab)
    return dict(state, generator=generator), metrics

  @jax.jit
  def update_improver(state, fake_ab):
    improver, metrics = system.update_improver(
        state["improver"], state["discriminator"], lightness, ab, fake_ab)
    return dict(state, improver=improver), metrics

  after_d, fake_ab = update_discriminator(state0)
  after_g, g_metrics = update_generator(after_d)
  after_i, i_metrics = update_improver(after_g, fake_ab)
  assert changed_networks(state0, after_d, networks) == {"discriminator"}
  assert changed_networks(after_d, after_g, networks) == {"generator"}
  assert changed_networks(after_g, after_i, networks) == {"improver"}

  # The real step is that composition: G learns against the D updated in this
  # step, the Improver against the same D and on G's output from before G's
  # update; neither G's nor the Improver's update moves D (its parameters or
  # running statistics), nor the Improver's update G.
  assert_networks_close(full, after_i, networks,
                        step_size=config.optimizer.learning_rate)
  for key in ("generator_gan_loss", "generator_l1_loss", "improver_gan_loss",
              "improver_l1_loss"):
    np.testing.assert_allclose(metrics[key], {**g_metrics, **i_metrics}[key],
                               rtol=1e-5, err_msg=key)
  # The same sub-steps against the discriminator from before its update give
  # other losses: the comparison above tells the orders apart.
  _, g_metrics_old_d = update_generator(state0)
  _, i_metrics_old_d = update_improver(state0, fake_ab)
  for key, old in (("generator_gan_loss", g_metrics_old_d),
                   ("improver_gan_loss", i_metrics_old_d)):
    assert relative_error(old[key], metrics[key]) > 1e-4, key

  # Inference: the final output (first) is the Improver's.
  outputs = system.colorize(state0, lightness)
  assert list(outputs) == ["improver", "generator"]
  for ab_out in outputs.values():
    assert ab_out.shape == ab.shape


@pytest.mark.parametrize("path", [
    # The DLA's 8-device compile takes minutes on 2 cores: `pytest -m slow`.
    pytest.param(CONFIGS[0], marks=pytest.mark.slow), CONFIGS[1]])
def test_step_on_8_devices_equals_1_device(path, one_device_step):
  assert jax.device_count() == 8
  config, state0, one_device = one_device_step(path)
  assert_same_steps(
      run_steps(config, jax.devices(), 1, initial_state=state0), one_device,
      systems.create(config).networks,
      step_size=config.optimizer.learning_rate)


def test_smoke_runs(tmp_path, one_device):
  results = {}
  for path in CONFIGS:
    workdir = tmp_path / path.split("/")[-1].removesuffix(".py")
    train.train_and_evaluate(load_config(path), str(workdir))
    lines = [json.loads(l)
             for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_keys = set().union(*(l for l in lines if "generator_loss" in l))
    results[path] = (train_keys,
                     json.loads((workdir / "eval" / "6.json").read_text()))

  train_keys, evaluation = results["configs/dla_cdcgan.py"]
  assert {"discriminator_loss", "generator_loss",
          "generator_l1_loss"} <= train_keys
  assert not any(k.startswith("improver") for k in train_keys)
  for key in ("psnr", "pixel_accuracy", "generator_psnr",
              "generator_pixel_accuracy", "gray_psnr"):
    assert np.isfinite(evaluation[key]), key

  train_keys, evaluation = results["configs/pix2pix_improver.py"]
  assert {"discriminator_loss", "generator_loss", "improver_loss",
          "improver_gan_loss", "improver_l1_loss",
          "improver_grad_norm"} <= train_keys
  for output in ("improver", "generator"):
    for metric in ("psnr", "ssim"):
      assert np.isfinite(evaluation[f"{output}_{metric}"]), (output, metric)
  # The unprefixed numbers are the final output's: the Improver's.
  assert evaluation["psnr"] == evaluation["improver_psnr"]
  assert evaluation["ssim"] == evaluation["improver_ssim"]


def test_step_on_8_devices_equals_1_device_with_xla_convolutions():
  """With XLA's own convolutions (what GPUs and TPUs run) the 8-device step
  matches the 1-device step tensor by tensor, without the element-wise
  allowance for Adam's first step on near-zero gradients that the
  custom-gradient forms need."""
  config = load_config(CONFIGS[1])
  config.conv_impl = "xla"
  state0 = init_host_state(config)
  assert_same_steps(
      run_steps(config, jax.devices(), 1, initial_state=state0),
      run_steps(config, jax.devices()[:1], 1, initial_state=state0),
      systems.create(config).networks)
