"""The GAN systems of configs/dla_cdcgan.py and configs/pix2pix_improver.py.

The order of the sub-steps (D, then G against the new D, then the Improver),
what each one may change, one step on 8 devices against 1, and smoke runs
of the training job that must colorize.
"""

import json

import jax
import numpy as np
import pytest

from jaxcolor import systems
from jaxcolor.systems import base
from jaxcolor.training import loop

from helpers import (assert_colorization_follows_input, assert_same_steps,
                     init_host_state, load_config, random_batch, run_steps,
                     step_errors, with_plain_sgd)

# One worker runs the whole file: its tests share module-scoped results
# (`python -m pytest -n 2` distributes with --dist loadgroup, pyproject.toml).
pytestmark = pytest.mark.xdist_group("systems_gan")

CONFIGS = ("configs/dla_cdcgan.py", "configs/pix2pix_improver.py")
# Plain SGD's rate in the step comparisons (helpers.with_plain_sgd): D moves
# enough in one step that G's GAN loss against the new D differs from the
# one against the old D by far more than rounding (test below).
SGD_RATE = 0.1


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
      config = with_plain_sgd(load_config(path), SGD_RATE)
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
  # Per tensor, gradients and batch statistics (helpers.step_errors): the
  # two are one program and three, so only their rounding differs. Measured
  # worst: 1.1e-6 (a batch-norm scale's gradient in D).
  composed = dict(jax.device_get(after_i), step=full["step"])
  errors = step_errors((composed, []), (full, []), state0)
  worst = max(errors, key=errors.get)
  assert errors[worst] < 1e-5, (worst, errors[worst])
  for key in ("generator_gan_loss", "generator_l1_loss", "improver_gan_loss",
              "improver_l1_loss"):
    np.testing.assert_allclose(metrics[key], {**g_metrics, **i_metrics}[key],
                               rtol=1e-5, err_msg=key)
  # The same sub-steps against the discriminator from before its update give
  # other losses (measured: 36 % apart, where rounding is 1e-6): the
  # comparison above tells the orders apart.
  _, g_metrics_old_d = update_generator(state0)
  _, i_metrics_old_d = update_improver(state0, fake_ab)
  for key, old in (("generator_gan_loss", g_metrics_old_d),
                   ("improver_gan_loss", i_metrics_old_d)):
    assert relative_error(old[key], metrics[key]) > 1e-2, key

  # Inference: the final output (first) is the Improver's.
  outputs = system.colorize(state0, lightness)
  assert list(outputs) == ["improver", "generator"]
  for ab_out in outputs.values():
    assert ab_out.shape == ab.shape


# One step on 8 devices against 1, per tensor (helpers.step_errors), each
# system's tolerance a few times its measured worst error (2-core x86 CPU,
# XLA:CPU, the smoke presets' XLA convolutions): DLA C-DCGAN 6.7e-6 (a
# batch-norm scale's gradient in the DLA generator), pix2pix + Improver
# 1.0e-6. A real bug is 4-6 orders of magnitude above: each device's
# gradient of its own shard, not averaged, gives errors up to 23 (DLA) and
# 4.3 (Improver) on the worst tensor and above 1 on most; per-device batch
# statistics with averaged gradients up to 8.4 and 1.5.
@pytest.mark.parametrize("path, rtol", [(CONFIGS[0], 3e-5), (CONFIGS[1], 1e-5)])
def test_step_on_8_devices_equals_1_device(path, rtol, one_device_step):
  assert jax.device_count() == 8
  config, state0, one_device = one_device_step(path)
  assert_same_steps(
      run_steps(config, jax.devices(), 1, initial_state=state0), one_device,
      state0, rtol=rtol)


def test_smoke_runs(tmp_path, one_device):
  results = {}
  for path in CONFIGS:
    workdir = tmp_path / path.split("/")[-1].removesuffix(".py")
    config = load_config(path)
    if path == "configs/dla_cdcgan.py":
      # Six steps leave batch norm's running statistics 0.9^6 = 53 % the
      # initial ones, and through the deep, narrow smoke DLA they shrink
      # the signal to nothing: with them (test mode 'eval') its output is
      # the same color everywhere to 2e-4 and for every photo to 3e-7 (Lab
      # units), i.e. blind. Each photo's own statistics (Isola et al.'s
      # test mode) show what the six steps trained.
      config.generator_test_mode = "train"
    loop.train_and_evaluate(config, str(workdir))
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

  # Logs, files and finite metrics come from a generator that outputs zeros
  # or ignores its input too: the trained runs must colorize, through each
  # output (the Improver's and the generator's beneath it).
  for path in CONFIGS:
    workdir = tmp_path / path.split("/")[-1].removesuffix(".py")
    assert_colorization_follows_input(workdir)
  assert_colorization_follows_input(tmp_path / "pix2pix_improver",
                                    output="generator")


def test_step_on_8_devices_equals_1_device_in_the_cpu_forms():
  """In the CPU's convolution forms (jaxcolor/backends/xla_cpu: patches and
  matrix products, with gradients of their own) as in XLA's convolutions:
  measured worst error 2.9e-6 (a batch-norm scale of D), against up to 4.3
  for the bugs above."""
  config = with_plain_sgd(load_config(CONFIGS[1]), SGD_RATE)
  config.conv_impl = "cpu"
  state0 = init_host_state(config)
  assert_same_steps(
      run_steps(config, jax.devices(), 1, initial_state=state0),
      run_steps(config, jax.devices()[:1], 1, initial_state=state0),
      state0, rtol=1e-5)
