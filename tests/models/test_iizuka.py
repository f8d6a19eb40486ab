"""Tests of the Iizuka et al. global + local colorization network."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcolor import models
from jaxcolor.models.iizuka import IizukaColorizer

# Test-sized variant: every width / 8, global path at 32 x 32. One model, one
# init and module-level jitted applies, so that tests share compilations
# (XLA:CPU compile time dominates these tests).
TINY = dict(width=8, global_size=32, num_classes=5)
MODEL = IizukaColorizer(**TINY)
apply_eval = jax.jit(functools.partial(MODEL.apply, train=False))
apply_train = jax.jit(functools.partial(MODEL.apply, train=True,
                                        mutable=["batch_stats"]))


@pytest.fixture(scope="module")
def variables():
  # The parameters do not depend on the input size (the global path always
  # sees global_size), so one init serves every test.
  x = jnp.zeros((2, 32, 32, 1))
  return jax.jit(lambda x: MODEL.init(jax.random.key(0), x, train=False))(x)


def _lightness(key, height, width, batch=2):
  return jax.random.uniform(key, (batch, height, width, 1), minval=-1.0,
                            maxval=1.0)


def _expected_param_count(num_classes, w=64, global_size=224):
  """Parameters from the layer table (Table 1): 3x3 kernels, no bias before a
  batch norm (2 parameters per channel), biases on fusion, output and logits."""
  conv = lambda cin, cout: 9 * cin * cout + 2 * cout
  dense_bn = lambda cin, cout: cin * cout + 2 * cout
  low = sum(conv(a, b) for a, b in
            [(1, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w),
             (4 * w, 8 * w)])
  mid = conv(8 * w, 8 * w) + conv(8 * w, 4 * w)
  side = global_size // 32
  glob = (4 * conv(8 * w, 8 * w) + dense_bn(side * side * 8 * w, 16 * w)
          + dense_bn(16 * w, 8 * w) + dense_bn(8 * w, 4 * w))
  color = ((8 * w) * (4 * w) + 4 * w + conv(4 * w, 2 * w) + conv(2 * w, w)
            + conv(w, w) + conv(w, w // 2) + 9 * (w // 2) * 2 + 2)
  head = dense_bn(8 * w, 4 * w) + 4 * w * num_classes + num_classes
  return low + mid + glob + color + (head if num_classes else 0)


def test_full_size_shapes_and_parameter_count():
  model = IizukaColorizer()  # Table 1 widths, 365 classes, global 224.
  x = jnp.zeros((2, 64, 64, 1))
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, train=False))
  count = sum(a.size for a in jax.tree.leaves(variables["params"]))
  assert count == _expected_param_count(365)
  # The global FC1 sees 7 x 7 x 512 at 224 whatever the input size.
  fc1 = variables["params"]["global_level"]["fc1"]["dense"]["kernel"]
  assert fc1.shape == (7 * 7 * 512, 1024)
  for shape in [(2, 64, 64, 1), (1, 96, 128, 1), (1, 224, 224, 1)]:
    ab, logits = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False), variables,
        jax.ShapeDtypeStruct(shape, jnp.float32))
    assert ab.shape == shape[:3] + (2,)
    assert logits.shape == (shape[0], 365)


def test_tiny_forward_shapes_and_range(variables):
  for height, width, train in [(40, 40, False), (24, 48, True)]:
    x = _lightness(jax.random.key(height), height, width)
    if train:
      (ab, logits), updates = apply_train(variables, x)
      assert set(updates) == {"batch_stats"}
    else:
      ab, logits = apply_eval(variables, x)
    assert ab.shape == (2, height, width, 2)
    assert logits.shape == (2, TINY["num_classes"])
    assert np.all(np.isfinite(ab)) and np.all(np.isfinite(logits))
    assert np.all(np.abs(ab) <= 1.0)


def test_ab_range_is_symmetric_unit_interval(variables):
  # Saturate the sigmoid: the output must span [-1, 1] (2 sigmoid - 1, the
  # codebase's ab / 110 scale), not the original's [0, 1], and never leave it.
  x = _lightness(jax.random.key(2), 40, 40)
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: p * 1e3 if "output" in jax.tree_util.keystr(path) else p,
      variables["params"])
  ab, _ = apply_eval({**variables, "params": params}, x)
  assert np.all(np.abs(ab) <= 1.0)
  assert ab.min() < -0.9 and ab.max() > 0.9


def _norms(tree):
  return {k: float(optax.tree.norm(v)) for k, v in tree.items()}


def test_gradients_reach_the_right_parts(variables):
  x = _lightness(jax.random.key(3), 40, 40)  # Not global_size: two paths.
  ab_target = jax.random.uniform(jax.random.key(4), (2, 40, 40, 2),
                                 minval=-1.0, maxval=1.0)
  labels = jnp.array([1, 3])

  def losses(params):
    (ab, logits), _ = MODEL.apply({**variables, "params": params}, x,
                                  train=True, mutable=["batch_stats"])
    color = jnp.mean((ab - ab_target) ** 2)
    classification = optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()
    return jnp.stack([color, classification])

  # Both gradients in one compilation: jacrev stacks them on a leading axis.
  grads = jax.jit(jax.jacrev(losses))(variables["params"])
  color_grads = jax.tree.map(lambda g: g[0], grads)
  class_grads = jax.tree.map(lambda g: g[1], grads)
  class_norms, color_norms = _norms(class_grads), _norms(color_grads)

  # The classification loss trains the shared low-level weights (through the
  # global path) and the global network, nothing of the local path.
  assert class_norms["low_level"] > 0
  assert class_norms["global_level"] > 0
  assert class_norms["classifier"] > 0
  assert class_norms["mid_level"] == 0
  assert class_norms["colorization"] == 0
  # The color loss trains everything but the classification head.
  assert color_norms["classifier"] == 0
  for part in ("low_level", "mid_level", "global_level", "colorization"):
    assert color_norms[part] > 0, part


def test_global_path_sees_only_the_resized_input(variables):
  # Two different 40 x 40 inputs whose 32 x 32 resize is the same: add a
  # pattern from the null space of the (separable, linear) resize.
  side, small = 40, TINY["global_size"]
  rows = np.asarray(jax.image.resize(jnp.eye(side), (small, side), "bilinear",
                                     antialias=True))  # [32, 40] row resize.
  null = np.linalg.svd(rows)[2][-1]  # rows @ null == 0.
  assert np.abs(rows @ null).max() < 1e-5
  x_a = 0.5 * _lightness(jax.random.key(5), side, side)
  pattern = np.outer(null, np.linspace(-1.0, 1.0, side))[None, :, :, None]
  x_b = x_a + jnp.asarray(2.0 * pattern / np.abs(pattern).max(), jnp.float32)
  resize = lambda x: jax.image.resize(x, (2, small, small, 1), "bilinear",
                                      antialias=True)
  np.testing.assert_allclose(resize(x_a), resize(x_b), atol=1e-5)

  glob = jax.jit(lambda x: MODEL.apply(
      variables, x, train=False, method=IizukaColorizer.global_features))
  (ab_a, logits_a), (ab_b, logits_b) = apply_eval(variables, x_a), apply_eval(
      variables, x_b)
  assert glob(x_a).shape == (2, 4 * TINY["width"])
  np.testing.assert_allclose(glob(x_a), glob(x_b), atol=1e-4)
  np.testing.assert_allclose(logits_a, logits_b, atol=1e-4)
  assert np.abs(ab_a - ab_b).max() > 1e-3  # The local path did change.

  # At global_size itself both paths share one low-level pass; the logits
  # (a function of the global path only) match those of the 40 x 40 input.
  _, logits_small = apply_eval(variables, resize(x_a))
  np.testing.assert_allclose(logits_small, logits_a, atol=1e-4)


def test_no_classification_head(variables):
  model = IizukaColorizer(**{**TINY, "num_classes": 0})
  x = _lightness(jax.random.key(6), 16, 24)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  assert set(shapes["params"]) == set(variables["params"]) - {"classifier"}
  # The same parameters less the head.
  headless = {**variables, "params": {
      k: v for k, v in variables["params"].items() if k != "classifier"}}
  ab, logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(headless, x)
  assert ab.shape == (2, 16, 24, 2)
  assert logits is None


@pytest.mark.parametrize("shape", [(1, 60, 64, 1), (1, 64, 36, 1),
                                   (1, 64, 64, 3), (64, 64, 1)])
def test_invalid_input_raises(shape):
  with pytest.raises(ValueError, match="multiples of 8"):
    jax.eval_shape(lambda: MODEL.init(jax.random.key(0), jnp.zeros(shape),
                                      train=False))


def test_invalid_attributes_raise():
  x = jnp.zeros((1, 32, 32, 1))
  for bad in [dict(width=7), dict(global_size=100), dict(num_classes=-1)]:
    with pytest.raises(ValueError):
      jax.eval_shape(lambda: IizukaColorizer(**{**TINY, **bad}).init(
          jax.random.key(0), x, train=False))


def test_registry_build():
  model = models.build("iizuka", num_classes=10, width=8, global_size=32)
  assert isinstance(model, IizukaColorizer)
  assert (model.num_classes, model.width, model.global_size) == (10, 8, 32)
  with pytest.raises(ValueError, match="takes no argument"):
    models.build("iizuka", features=3)


def test_bfloat16_compute(variables):
  model = IizukaColorizer(**TINY, dtype=jnp.bfloat16)
  x = _lightness(jax.random.key(7), 16, 16)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes["params"]))
  ab, logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, x)
  assert ab.dtype == jnp.bfloat16 and logits.dtype == jnp.bfloat16
  assert np.all(np.abs(np.asarray(ab, np.float32)) <= 1.0)
