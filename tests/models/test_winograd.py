"""Winograd's minimal filtering (jaxcolor/models/winograd.py): the transforms
are exact, and every pass computes the convolution's function and gradients
(against `lax.conv_general_dilated` and JAX's autodiff of it); the layers of
layers.py take it where their thresholds say. Whole networks with it in
place: test_conv_impls_agree_in_a_training_step
(tests/models/test_unet_patchgan.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcolor.models import layers, winograd

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _random(shape, seed):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _assert_close(actual, expected, tolerance):
  """Agreement relative to the expected values' scale: Winograd rounds the
  same sums differently."""
  scale = float(np.std(expected))
  assert scale > 0
  np.testing.assert_allclose(actual, expected, atol=tolerance * scale)


@pytest.mark.parametrize("m,r", [(2, 2), (3, 2), (2, 3), (4, 3), (2, 4),
                                 (3, 4), (4, 4)])
def test_transforms_compute_the_correlation_exactly(m, r):
  a_t, g, b_t = winograd.transforms(m, r)
  assert a_t.shape == (m, m + r - 1) and g.shape == (m + r - 1, r)
  rng = np.random.default_rng(m * 10 + r)
  for _ in range(5):
    d = rng.standard_normal(m + r - 1)
    f = rng.standard_normal(r)
    expected = [sum(d[i + k] * f[k] for k in range(r)) for i in range(m)]
    np.testing.assert_allclose(a_t @ ((g @ f) * (b_t @ d)), expected,
                               rtol=1e-12, atol=1e-12)


def test_transforms_refuse_tiles_without_enough_points():
  with pytest.raises(ValueError, match="interpolation points"):
    winograd.transforms(8, 4)


@pytest.mark.parametrize("shape,r,p", [
    ((2, 7, 9, 5), 4, 1), ((1, 6, 6, 3), 4, 0), ((2, 5, 8, 4), 4, 2),
    ((1, 4, 5, 3), 4, 3), ((2, 9, 7, 6), 3, 1), ((1, 6, 5, 2), 2, 0)])
def test_correlate_is_the_convolution_with_its_gradients(shape, r, p):
  x = _random(shape, 0)
  kernel = _random((r, r, shape[-1], 7), 1) / r

  def direct(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)),
                                    dimension_numbers=_DIMENSIONS)
  expected, direct_vjp = jax.vjp(direct, x, kernel)
  actual, vjp = jax.vjp(lambda x, w: winograd.correlate(x, w, p), x, kernel)
  assert actual.shape == expected.shape
  _assert_close(actual, expected, 1e-5)
  grad = _random(expected.shape, 2)
  for a, b in zip(vjp(grad), direct_vjp(grad)):
    _assert_close(a, b, 1e-5)


@pytest.mark.parametrize("shape", [(2, 10, 14, 5), (1, 4, 4, 3),
                                   (1, 12, 6, 8)])
def test_stride_2_forms_are_the_strided_convolution_and_its_gradients(shape):
  x = _random(shape, 3)
  kernel = _random((4, 4, shape[-1], 6), 4) / 4

  def direct(x, kernel):
    return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                    dimension_numbers=_DIMENSIONS)
  expected, direct_vjp = jax.vjp(direct, x, kernel)
  _assert_close(winograd.strided(x, kernel), expected, 1e-5)
  grad = _random(expected.shape, 5)
  grad_x, grad_kernel = direct_vjp(grad)
  _assert_close(winograd.strided_input_gradient(grad, kernel), grad_x, 1e-5)
  _assert_close(winograd.strided_weight_gradient(x, grad), grad_kernel, 1e-5)


@pytest.fixture
def winograd_everywhere(monkeypatch):
  """Thresholds at their floor, so small test layers take the Winograd
  forms; the calls made to them are counted."""
  monkeypatch.setattr(layers, "_WINOGRAD_MIN_CHANNELS", 1)
  monkeypatch.setattr(layers, "_WINOGRAD_MIN_GRID", 1)
  calls = {"correlate": 0, "strided": 0, "strided_input_gradient": 0}
  for name in calls:
    original = getattr(winograd, name)

    def counted(*args, _name=name, _original=original):
      calls[_name] += 1
      return _original(*args)
    monkeypatch.setattr(winograd, name, counted)
  return calls


@pytest.mark.parametrize("cls,kwargs,shape", [
    (layers.Conv1x, {"kernel_size": 4, "padding": 1}, (2, 9, 7, 5)),
    (layers.Conv2x, {}, (2, 10, 8, 5)),
    (layers.ConvTranspose2x, {}, (2, 5, 4, 5))])
def test_layers_take_winograd_and_agree_with_xla(winograd_everywhere, cls,
                                                  kwargs, shape):
  x = _random(shape, 6)
  modules = {impl: cls(6, impl=impl, **kwargs) for impl in ("cpu", "xla")}
  variables = modules["xla"].init(jax.random.key(7), x)

  def loss(params, x, impl):
    y = modules[impl].apply({"params": params}, x)
    return jnp.sum(jnp.sin(3 * y)), y

  results = {impl: jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      variables["params"], x, impl) for impl in modules}
  assert sum(winograd_everywhere.values()) > 0
  (_, y_cpu), grads_cpu = results["cpu"]
  (_, y_xla), grads_xla = results["xla"]
  _assert_close(y_cpu, y_xla, 1e-5)
  for a, b in zip(jax.tree.leaves(grads_cpu), jax.tree.leaves(grads_xla)):
    _assert_close(a, b, 1e-4)


def test_thresholds_pick_winograd_only_for_large_layers():
  # pix2pix at 128 px: the generator's down_1 (64 -> 128, 64 -> 32 px) and
  # the PatchGAN's 256 -> 512 stride-1 layer take it; the 8 x 8 level, the
  # photo's one-channel input and the two ab outputs do not.
  def kernel(*shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)
  assert layers._winograd_stride_2(kernel(4, 4, 64, 128), 1, 32)
  assert not layers._winograd_stride_2(kernel(4, 4, 256, 512), 1, 8)
  assert not layers._winograd_stride_2(kernel(4, 4, 1, 64), 1, 64)
  assert not layers._winograd_stride_2(kernel(4, 4, 128, 2), 1, 64)
  assert not layers._winograd_stride_2(kernel(3, 3, 64, 64), 1, 32)
  assert not layers._winograd_stride_2(
      kernel(4, 4, 64, 128, dtype=jnp.bfloat16), 1, 32)
  x = jnp.zeros((1, 16, 16, 256))
  jaxpr = str(jax.make_jaxpr(lambda x: layers.Conv1x(
      512, impl="cpu").init_with_output(jax.random.key(0), x)[0])(x))
  assert "conv_general_dilated" not in jaxpr
  jaxpr = str(jax.make_jaxpr(lambda x: layers.Conv1x(
      1, impl="cpu").init_with_output(jax.random.key(0), x)[0])(x))
  assert "conv_general_dilated" in jaxpr
  jaxpr = str(jax.make_jaxpr(lambda x: layers.Conv1x(
      512, impl="cpu", dtype=jnp.bfloat16).init_with_output(
          jax.random.key(0), x)[0])(x))
  assert "conv_general_dilated" in jaxpr


def test_outside_the_receptive_field_only_rounding():
  """Output (0, 0) reads input rows and columns -1..2 (4 x 4 kernel, padding
  1); its F(3 x 3, 4 x 4) tile, the outputs 0..2, reads -1..4 as one
  computation. Moving a pixel of that tile outside the field moves the
  output by rounding only (the transforms' products do not cancel
  exactly), a pixel beyond the tile not at all."""
  x = _random((1, 9, 9, 4), 8)
  kernel = _random((4, 4, 4, 3), 9) / 4

  def moved(row, col):
    before = winograd.correlate(x, kernel, 1)[0, 0, 0]
    after = winograd.correlate(x.at[0, row, col].add(1.0), kernel, 1)[0, 0, 0]
    return float(np.abs(np.asarray(after - before)).max())
  assert moved(2, 2) > 0.01                                  # In the field.
  assert max(moved(3, 3), moved(3, 0), moved(4, 1)) <= 1e-5  # In the tile.
  assert moved(5, 5) == moved(0, 6) == 0                     # Beyond it.
