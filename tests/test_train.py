"""The training machinery: sharded step, resumption, entry point, learning."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcolor import configuration
from jaxcolor import parallel
from jaxcolor import systems
from jaxcolor import train

REPO = Path(__file__).resolve().parents[1]


def load_config(path: str, arg: str | None = "smoke"):
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", REPO / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def random_batch(batch_size: int, size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  # Smooth random colour fields: more like photos than white noise.
  low = rng.integers(0, 256, (batch_size, size // 8, size // 8, 3))
  image = np.kron(low, np.ones((1, 8, 8, 1))).astype(np.uint8)
  return {"image": image}


def run_steps(config, devices, num_steps: int):
  system = systems.create(config)
  mesh = parallel.make_mesh(devices)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  abstract = jax.eval_shape(system.init, init_rng)
  step_fn, sharding = train.jit_train_step(system, mesh, abstract)
  state = train.init_state(system, sharding, init_rng)
  step_rng = parallel.replicate(step_rng, mesh)
  history = []
  for i in range(num_steps):
    batch = parallel.global_batch(random_batch(config.batch_size,
                                               config.image_size, seed=i), mesh)
    state, metrics = step_fn(state, batch, step_rng)
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def test_step_on_8_devices_equals_1_device():
  assert jax.device_count() == 8
  config = load_config("configs/pix2pix.py")
  state8, metrics8 = run_steps(config, jax.devices(), 1)
  state1, metrics1 = run_steps(config, jax.devices()[:1], 1)
  for m8, m1 in zip(metrics8, metrics1):
    for key in m1:
      np.testing.assert_allclose(m8[key], m1[key], rtol=1e-5, atol=1e-6,
                                 err_msg=key)
  # Per tensor, relative to its norm: an all-reduce sums in another order, and
  # Adam turns a last-bit difference in a near-zero gradient into a visible
  # one in that single element, so element-wise tolerance would test rounding.
  for name in ("generator", "discriminator"):
    for tree8, tree1 in ((state8[name].params, state1[name].params),
                         (state8[name].batch_stats, state1[name].batch_stats)):
      for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(tree8),
                              jax.tree.leaves(tree1)):
        error = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
        assert error < 1e-5, (name, jax.tree_util.keystr(path), error)
  assert int(state8["step"]) == 1


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
  train.train_and_evaluate(config, str(straight))

  resumed = tmp_path / "resumed"
  half = config.copy_and_resolve_references()
  half.num_train_steps = 2
  train.train_and_evaluate(half, str(resumed))
  train.train_and_evaluate(config, str(resumed))

  def final_params(workdir):
    from jaxcolor import checkpointing
    ckpt = checkpointing.Checkpointer(workdir / "checkpoints", keep=3)
    system = systems.create(config)
    abstract = jax.eval_shape(system.init, jax.random.key(0))
    state = ckpt.restore(ckpt.latest_step(), abstract)
    ckpt.close()
    return state

  a, b = final_params(straight), final_params(resumed)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)
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
    train.setup(config, str(tmp_path))
  config = load_config("configs/pix2pix.py")
  config.image_size = 40  # 5 downsamplings need a multiple of 32.
  with pytest.raises(configuration.ConfigError, match="image_size=40"):
    train.setup(config, str(tmp_path))
  config = load_config("configs/pix2pix.py")
  config.loss.gan_mode = "wgan"
  with pytest.raises(configuration.ConfigError, match="gan_mode"):
    train.setup(config, str(tmp_path))
  config = load_config("configs/pix2pix.py")
  with config.unlocked():
    config.generator.ngff = 3
  with pytest.raises(configuration.ConfigError, match="ngff"):
    train.setup(config, str(tmp_path))


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


def test_unknown_config_field_is_one_line_error(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.main", "--config",
       str(REPO / "configs/pix2pix.py") + ":smoke", "--workdir",
       str(tmp_path), "--config.batch_size=0"],
      capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert result.returncode == 2
  assert "batch_size=0" in result.stderr
  assert "Traceback" not in result.stderr


def test_short_run_lowers_l1(tmp_path):
  config = load_config("configs/default.py")
  config.num_train_steps = 60
  config.optimizer.decay_steps = 0
  config.optimizer.learning_rate = 1e-3
  config.log_every_steps = 15
  config.eval_every_steps = 60
  config.checkpoint_every_steps = 60
  config.image_every_steps = 60
  train.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  l1 = [l["generator_l1_loss"] for l in lines if "generator_l1_loss" in l]
  assert len(l1) == 4
  # Each value is the mean over 15 steps of different batches.
  assert l1[-1] < 0.85 * l1[0], l1
