"""The Iizuka system: joint color + classification loss, ADADELTA, labels."""

import functools
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from jaxcolor import systems
from jaxcolor.core import color_space
from jaxcolor.core import configuration
from jaxcolor.systems import base
from jaxcolor.training import experiment
from jaxcolor.training import loop

from helpers import (assert_colorization_follows_input, assert_same_steps,
                     run_steps, with_plain_sgd)

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 365  # places365_small, the config's dataset.


def load_config(arg="smoke"):
  spec = importlib.util.spec_from_file_location("iizuka_config",
                                                REPO / "configs/iizuka.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def labelled_batch(batch_size: int, size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  # Smooth random color fields: more like photos than white noise.
  low = rng.integers(0, 256, (batch_size, size // 8, size // 8, 3))
  image = np.kron(low, np.ones((1, 8, 8, 1))).astype(np.uint8)
  label = rng.integers(0, NUM_CLASSES, (batch_size,)).astype(np.int32)
  return {"image": image, "label": label}


@pytest.fixture(scope="module")
def config():
  return load_config()


@pytest.fixture(scope="module")
def initial_state(config):
  """A fresh state with parameters drawn by numpy (He-scaled kernels).

  `system.init` would cost a compilation of its own (~15 s on XLA:CPU); the
  runs below go through it.
  """
  system = systems.create(config)
  abstract = jax.eval_shape(system.init, jax.random.key(0))["colorizer"]
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      std = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
      return rng.normal(0.0, std, leaf.shape).astype(leaf.dtype)
    if name in ("scale", "var"):
      return np.ones(leaf.shape, leaf.dtype)
    return rng.normal(0.0, 0.1, leaf.shape).astype(leaf.dtype)

  params = jax.tree_util.tree_map_with_path(fill, abstract.params)
  batch_stats = jax.tree_util.tree_map_with_path(fill, abstract.batch_stats)
  colorizer = base.TrainState.create(apply_fn=system.colorizer.apply,
                                     params=params, tx=system.tx,
                                     batch_stats=batch_stats)
  return jax.device_get({**base.counters(), "colorizer": colorizer})


def test_labelled_step_on_8_devices_equals_1_device(config, initial_state):
  """The same gradients, batch statistics and metrics, per tensor
  (helpers.step_errors), with plain SGD in place of ADADELTA (its state is
  then the step's gradient), on a labelled batch: both loss terms train.

  Measured worst error (2-core x86 CPU, XLA:CPU): 1.9e-5 from this state
  (the gradient of a batch-norm scale in the low-level network, where
  batch norm's backward pass cancels most of the sums; 5.1e-5 from the
  system's own initialization); the tolerance is 1e-4. A real bug is 4
  orders of magnitude above it (measured from the system's
  initialization): each device's gradient of its own shard, not averaged,
  gives errors of 0.16 to 3.1 on every gradient tensor; per-device batch
  statistics with averaged gradients up to 1.7, and up to 1.6 on the
  running variances.
  """
  assert jax.device_count() == 8
  sgd_config = with_plain_sgd(config, 0.1)
  system = systems.create(sgd_config)
  colorizer = initial_state["colorizer"]
  state0 = dict(initial_state, colorizer=base.TrainState.create(
      apply_fn=system.colorizer.apply, params=colorizer.params, tx=system.tx,
      batch_stats=colorizer.batch_stats))
  state0 = jax.device_get(state0)
  run8, run1 = (run_steps(sgd_config, devices, 1, initial_state=state0,
                          num_classes=NUM_CLASSES)
                for devices in (jax.devices(), jax.devices()[:1]))
  (_, (metrics,)) = run1
  assert {"colorizer_color_loss", "colorizer_classification_loss",
          "colorizer_loss", "classification_accuracy",
          "colorizer_grad_norm"} <= set(metrics)
  assert metrics["classification_enabled"] == 1.0
  assert_same_steps(run8, run1, state0, rtol=1e-4)


def test_loss_terms_and_classification_gradient(config, initial_state):
  system = systems.create(config)
  colorizer = jax.device_put(initial_state["colorizer"], jax.devices()[0])
  batch = labelled_batch(4, config.image_size, seed=3)
  lightness, ab = color_space.split_lab(batch["image"])
  labels = jnp.asarray(batch["label"])

  @jax.jit
  def losses_and_grads(params):
    with_labels = jax.value_and_grad(system.objective, has_aux=True)(
        params, colorizer, lightness, ab, labels)
    without = jax.value_and_grad(system.objective, has_aux=True)(
        params, colorizer, lightness, ab, None)
    (pred_ab, logits), _ = colorizer.apply_fn(
        colorizer.variables, lightness, train=True, mutable=["batch_stats"])
    return with_labels, without, pred_ab, logits

  ((loss_l, (_, metrics_l)), grads_l), ((loss_n, (_, metrics_n)), grads_n), \
      pred_ab, logits = losses_and_grads(colorizer.params)

  # Without labels: exactly the color MSE, on the original's [0, 1] scale.
  mse = np.mean(np.square((np.asarray(pred_ab) - np.asarray(ab)) / 2))
  np.testing.assert_allclose(loss_n, mse, rtol=1e-5)
  assert set(metrics_n) == {"colorizer_color_loss", "colorizer_loss",
                            "classification_enabled"}
  assert metrics_n["classification_enabled"] == 0.0
  # With labels: + alpha * softmax cross-entropy.
  logits = np.asarray(logits, np.float64)
  cross_entropy = np.mean(special.logsumexp(logits, axis=-1)
                          - logits[np.arange(4), batch["label"]])
  np.testing.assert_allclose(metrics_l["colorizer_classification_loss"],
                             cross_entropy, rtol=1e-5)
  np.testing.assert_allclose(loss_l, mse + cross_entropy / 300, rtol=1e-5)

  # The classification term's gradient reaches the shared low-level weights
  # (the difference of the two gradients is alpha * grad CE) and trains the
  # head, which gets no gradient without labels.
  def kernel(grads, *path):
    return np.asarray(functools.reduce(lambda t, k: t[k], path, grads))
  low = ("low_level", "conv1", "conv", "kernel")
  ce_grad = kernel(grads_l, *low) - kernel(grads_n, *low)
  assert np.linalg.norm(ce_grad) > 1e-3 * np.linalg.norm(kernel(grads_n, *low))
  head = ("classifier", "logits", "kernel")
  assert np.abs(kernel(grads_n, *head)).max() == 0
  assert np.abs(kernel(grads_l, *head)).max() > 0


def test_config_errors_name_the_key(tmp_path):
  config = load_config()
  config.loss.classification_weight = -1.0
  with pytest.raises(configuration.ConfigError,
                     match="loss.classification_weight=-1.0"):
    systems.create(config).validate()
  config = load_config()
  config.optimizer.name = "rmsprop"
  with pytest.raises(configuration.ConfigError,
                     match="optimizer.name='rmsprop' is invalid"):
    systems.create(config)  # Builds, and checks, the optimizer.
  tfds = pytest.importorskip("tensorflow_datasets")
  config = load_config()
  config.dataset = "cifar10"
  with tfds.testing.mock_data(num_examples=4, data_dir=str(tmp_path)):
    with pytest.raises(configuration.ConfigError,
                       match="num_classes=365 does not match.*10 classes"):
      experiment.build(config)  # Opens the datasets; the system checks them.
    config.colorizer.num_classes = 0  # The color-only ablation runs.
    experiment.build(config)


def test_smoke_run_without_labels(tmp_path, one_device, caplog):
  workdir = tmp_path / "run"
  loop.train_and_evaluate(load_config(), str(workdir))
  assert "Classification term OFF: dataset 'sample' has no labels" in caplog.text
  lines = [json.loads(l) for l in
           (workdir / "metrics.jsonl").read_text().splitlines()]
  train_lines = [l for l in lines if "colorizer_color_loss" in l]
  assert [l["step"] for l in train_lines] == [2, 4, 6]
  for line in train_lines:
    assert line["classification_enabled"] == 0
    assert "colorizer_classification_loss" not in line
    assert np.isfinite(line["colorizer_loss"])
  evaluation = json.loads((workdir / "eval" / "6.json").read_text())
  assert "psnr" in evaluation and "classification_accuracy" not in evaluation
  # The run colorizes: a colorizer that outputs zeros or ignores its input
  # would pass the lines above.
  assert_colorization_follows_input(workdir)


def test_labelled_run_logs_both_losses_and_eval_accuracy(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = load_config()
  config.dataset = "places365_small"
  config.data_dir = str(tmp_path / "tfds")
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.eval_every_steps = 2
  config.image_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_eval_images = 12
  with tfds.testing.mock_data(num_examples=16, data_dir=config.data_dir):
    last_eval = loop.train_and_evaluate(config, str(tmp_path / "run"))
  lines = [json.loads(l) for l in
           (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  train_lines = [l for l in lines if "colorizer_loss" in l]
  assert [l["step"] for l in train_lines] == [1, 2]
  for line in train_lines:
    assert line["classification_enabled"] == 1
    np.testing.assert_allclose(
        line["colorizer_loss"],
        line["colorizer_color_loss"]
        + line["colorizer_classification_loss"] / 300, rtol=1e-5)
    assert 0 <= line["classification_accuracy"] <= 1
  evaluation = json.loads((tmp_path / "run" / "eval" / "2.json").read_text())
  assert evaluation["num_images"] == 12
  assert 0 <= evaluation["classification_accuracy"] <= 1
  # 12 images: the accuracy is a whole number of twelfths.
  assert abs(evaluation["classification_accuracy"] * 12
             - round(evaluation["classification_accuracy"] * 12)) < 1e-4
  assert last_eval["classification_accuracy"] == evaluation[
      "classification_accuracy"]
