"""The training machinery: sharded step, resumption, entry point, learning."""

import fcntl
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcolor import systems
from jaxcolor.core import configuration
from jaxcolor.core import parallel
from jaxcolor.training import experiment
from jaxcolor.training import loop
from jaxcolor.training import train_step

from helpers import (REPO, assert_colorization_follows_input, assert_same_steps,
                     init_host_state, load_config, make_checkpoint, run_steps,
                     with_plain_sgd)


def test_step_on_8_devices_equals_1_device():
  """One step of pix2pix on 8 devices and on 1: the same gradients, batch
  statistics and losses, tensor by tensor (helpers.step_errors; plain SGD,
  so nothing but the step's own rounding shows). In the smoke preset's XLA
  convolutions; tests/systems/test_gan.py checks the CPU forms
  (jaxcolor/backends/xla_cpu) with the same networks and an Improver.

  Measured worst error (2-core x86 CPU, XLA:CPU): 1.5e-6 (D's first bias,
  whose gradient sums every patch of the sharded batch; 2.9e-6 in the CPU
  forms); the tolerance is 1e-5. A real bug is 4-5 orders of magnitude
  above it (same measurement): each device's gradient of its own shard,
  not averaged, gives errors of 0.45 to 3.4 on every gradient tensor;
  per-device batch statistics with averaged gradients 0.09 to 1.6, and up
  to 0.27 on the running means.
  """
  assert jax.device_count() == 8
  config = with_plain_sgd(load_config("configs/pix2pix.py"), learning_rate=0.1)
  state0 = init_host_state(config)
  assert_same_steps(
      run_steps(config, jax.devices(), 1, initial_state=state0),
      run_steps(config, jax.devices()[:1], 1, initial_state=state0),
      state0, rtol=1e-5)


def test_resume_continues_exactly(tmp_path):
  config = load_config("configs/pix2pix.py")
  config.num_train_steps = 4
  # The same schedule for the 2-step and the 4-step run.
  config.optimizer.constant_steps = 2
  config.optimizer.decay_steps = 2
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 100
  config.image_every_steps = 100
  config.log_every_steps = 1
  straight = tmp_path / "straight"
  loop.train_and_evaluate(config, str(straight))

  resumed = tmp_path / "resumed"
  half = config.copy_and_resolve_references()
  half.num_train_steps = 2
  loop.train_and_evaluate(half, str(resumed))
  loop.train_and_evaluate(config, str(resumed))

  def final_params(workdir):
    from jaxcolor.training import checkpointing
    ckpt = checkpointing.Checkpointer(workdir / "checkpoints", keep=3)
    system = systems.create(config)
    abstract = jax.eval_shape(system.init, jax.random.key(0))
    state = ckpt.restore(ckpt.latest_step(), abstract)
    ckpt.close()
    return state

  a, b = final_params(straight), final_params(resumed)
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):  # Params, batch stats, Adam moments.
    np.testing.assert_array_equal(x, y)
  assert int(a["step"]) == 4
  lines = [json.loads(l) for l in (resumed / "metrics.jsonl").read_text().splitlines()]
  train_steps = [l["step"] for l in lines if "generator_loss" in l]
  assert train_steps == [1, 2, 3, 4]
  straight_lines = [json.loads(l) for l in (straight / "metrics.jsonl").read_text().splitlines()]
  losses_a = [l["generator_l1_loss"] for l in straight_lines if "generator_l1_loss" in l]
  losses_b = [l["generator_l1_loss"] for l in lines if "generator_l1_loss" in l]
  np.testing.assert_allclose(losses_a, losses_b, rtol=1e-6)


def test_invalid_config_fails_before_compiling(tmp_path):
  config = load_config("configs/pix2pix.py")
  config.batch_size = 12  # 8 devices cannot split it.
  with pytest.raises(configuration.ConfigError, match="batch_size=12"):
    experiment.build(config)
  config = load_config("configs/pix2pix.py")
  config.image_size = 40  # 5 downsamplings need a multiple of 32.
  with pytest.raises(configuration.ConfigError, match="image_size=40"):
    experiment.build(config)
  config = load_config("configs/pix2pix.py")
  config.loss.gan_mode = "wgan"
  with pytest.raises(configuration.ConfigError, match="gan_mode"):
    experiment.build(config)
  config = load_config("configs/pix2pix.py")
  with config.unlocked():
    config.generator.ngff = 3
  with pytest.raises(configuration.ConfigError, match="ngff"):
    experiment.build(config)


def test_main_end_to_end_smoke(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.main", "--config",
       str(REPO / "configs/pix2pix.py") + ":smoke", "--workdir", str(workdir)],
      capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert all("step" in l for l in lines)
  assert any(k.endswith("loss") for k in lines[0])
  assert (workdir / "eval" / "6.json").exists()
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == ["3", "6"]
  assert list((workdir / "images").glob("grid_*.png"))
  assert list(workdir.glob("events.out.tfevents.*"))
  # Files and finite losses come from any generator, one that outputs zeros
  # (the gray photo back) or ignores its input too: the run must colorize.
  assert_colorization_follows_input(workdir)


def test_the_colorization_check_catches_a_zero_or_blind_generator(
    tmp_path, monkeypatch):
  """What `assert_colorization_follows_input` adds to the smoke tests: a
  made-up checkpoint (random kernels) passes; the same run with its
  generator replaced by one that outputs zeros, or by the real network fed
  a blank photo whatever the photo, fails."""
  from jaxcolor.systems import pix2pix  # noqa: PLC0415

  config = load_config("configs/pix2pix.py")
  make_checkpoint(config, tmp_path / "run", steps=(6,))
  assert_colorization_follows_input(tmp_path / "run")
  generate = pix2pix.Pix2Pix.generate
  for name, replacement in (
      ("zeros", lambda self, variables, lightness: jnp.zeros(
          lightness.shape[:-1] + (2,), jnp.float32)),
      ("blind", lambda self, variables, lightness: generate(
          self, variables, jnp.zeros_like(lightness)))):
    monkeypatch.setattr(pix2pix.Pix2Pix, "generate", replacement)
    with pytest.raises(AssertionError):
      assert_colorization_follows_input(tmp_path / "run")
    monkeypatch.undo()


def test_unknown_config_field_is_one_line_error(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.main", "--config",
       str(REPO / "configs/pix2pix.py") + ":smoke", "--workdir",
       str(tmp_path), "--config.batch_size=0"],
      capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert result.returncode == 2
  assert "batch_size=0" in result.stderr
  assert "Traceback" not in result.stderr


def test_short_run_lowers_l1():
  """40 steps of the README's config on one batch of real photos: the
  generator must fit it (the GAN term is on, as in training)."""
  from jaxcolor import data
  config = load_config("configs/default.py", None)
  system = systems.create(config)
  mesh = parallel.make_mesh(jax.devices()[:1])  # 8 simulated devices: 10x slower.
  init_rng, step_rng = jax.random.split(jax.random.key(0))
  step_fn, sharding = train_step.jit_train_step(
      system, mesh, jax.eval_shape(system.init, init_rng))
  state = experiment.initial_state(system, sharding, init_rng)
  photos = data.create_train_iterator(
      "sample", image_size=config.image_size,
      global_batch_size=config.batch_size, seed=0)
  batch = parallel.global_batch(next(photos), mesh)
  l1 = []
  for _ in range(40):
    state, metrics = step_fn(state, batch, parallel.replicate(step_rng, mesh))
    l1.append(float(metrics["generator_l1_loss"]))
  assert np.mean(l1[-5:]) < 0.75 * l1[0], l1


def test_a_failed_run_releases_its_workdir(tmp_path, monkeypatch):
  def fails(*args, **kwargs):
    raise RuntimeError("boom")
  monkeypatch.setattr(loop, "_train", fails)
  workdir = tmp_path / "run"
  with pytest.raises(RuntimeError, match="boom"):
    loop.train_and_evaluate(load_config("configs/default.py"), str(workdir))
  assert (workdir / "config.json").exists()
  fd = os.open(workdir / ".lock", os.O_RDWR)
  try:  # Another open file takes the lock only once the run let it go.
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  finally:
    os.close(fd)
