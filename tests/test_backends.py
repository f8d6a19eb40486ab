"""The convolution backends (jaxcolor/backends/): which forms a platform
gets, the CPU's compiler options, and that the CPU's forms compute the
networks' function: Winograd's minimal filtering pass by pass, and whole
networks, whose checkpoints move between the forms. The layers' other CPU
forms, one by one: tests/models/test_layers.py."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax

import helpers
from jaxcolor import backends
from jaxcolor import models
from jaxcolor import systems
from jaxcolor.backends.xla_cpu import CpuConvForms
from jaxcolor.backends.xla_cpu import products
from jaxcolor.backends.xla_cpu import winograd
from jaxcolor.core.choices import CONV_DIMENSIONS
from jaxcolor.core.errors import ConfigError
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.models import layers
from jaxcolor.training import experiment
from jaxcolor.training import train_step

# Thresholds at their floor: every eligible layer of a small test network
# takes Winograd's forms.
WINOGRAD_EVERYWHERE = CpuConvForms(winograd_min_channels=1,
                                   winograd_min_grid=1)


def _normal(shape, seed):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


# -- Selection -----------------------------------------------------------------

def test_auto_takes_the_cpu_forms_only_for_the_cpu():
  # The platform the programs are compiled for decides, not JAX's default
  # backend: a CPU host compiling for a TPU slice gets XLA's forms.
  assert backends.select("auto", "tpu") is None
  assert backends.select("auto", "gpu") is None
  assert backends.select("auto", "cpu") == CpuConvForms()
  assert backends.select("xla", "cpu") is None
  assert backends.select("cpu", "tpu") == CpuConvForms()
  assert [backends.resolve("auto", p) for p in ("cpu", "gpu", "tpu")] == [
      "cpu", "xla", "xla"]
  with pytest.raises(ValueError, match="conv_impl='gpu'"):
    backends.select("gpu", "cpu")


def test_a_system_builds_its_networks_for_its_platform():
  config = helpers.load_config("configs/pix2pix.py")
  config.conv_impl = "auto"  # The smoke preset's is 'xla'.
  for platform, expected in (("tpu", None), ("cpu", CpuConvForms())):
    system = systems.create(config, platform=platform)
    assert system.platform == platform
    assert system.generator.conv_backend == expected
    assert system.discriminator.conv_backend == expected
  assert systems.create(config).platform == jax.default_backend()
  built = experiment.build(config, data="none",
                           devices=jax.local_devices()[:1])
  assert built.system.platform == "cpu"
  config.conv_impl = "cuda"
  with pytest.raises(ConfigError, match="config.conv_impl='cuda'"):
    systems.create(config)


def test_compiler_options_by_platform_and_library(monkeypatch):
  def config(library):
    return ml_collections.ConfigDict({"cpu_conv_library": library})
  options = backends.compiler_options(config("eigen"), "cpu")
  assert options is not None
  assert backends.compiler_options(config("eigen"), "tpu") is None
  assert backends.compiler_options(config("eigen"), "gpu") is None
  assert backends.compiler_options(config("ynnpack"), "cpu") is None
  with pytest.raises(ValueError, match="cpu_conv_library='mkl'"):
    backends.compiler_options(config("mkl"), "cpu")
  # Another library, the same function.
  x, kernel = _normal((2, 8, 8, 16), 1), _normal((4, 4, 16, 32), 2)

  def network(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                    dimension_numbers=CONV_DIMENSIONS)
  np.testing.assert_allclose(
      jax.jit(network, compiler_options=options)(x, kernel),
      jax.jit(network)(x, kernel), rtol=1e-5, atol=1e-4)
  # The user's own XLA_FLAGS for the same option win.
  monkeypatch.setenv("XLA_FLAGS",
                     "--xla_cpu_experimental_ynn_fusion_type=-individual_dot")
  assert backends.compiler_options(config("eigen"), "cpu") is None


def test_the_step_and_the_colorizer_take_the_options_of_their_platform(
    monkeypatch):
  asked = []

  def options(config, platform):
    asked.append((config.cpu_conv_library, platform))
    return None
  monkeypatch.setattr(backends, "compiler_options", options)
  config = helpers.load_config("configs/pix2pix.py")
  config.cpu_conv_library = "ynnpack"
  built = experiment.build(config, data="none",
                           devices=jax.local_devices()[:1])
  train_step.jit_train_step(built.system, built.mesh, built.abstract_state)
  state = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                       built.abstract_state)
  colorizer_lib.Colorizer(built.system, state, image_size=config.image_size,
                     batch_size=2)
  assert asked == [("ynnpack", "cpu")] * 2


# -- Winograd's minimal filtering ------------------------------------------------

def _assert_close(actual, expected, tolerance):
  """Agreement relative to the expected values' scale: Winograd rounds the
  same sums differently."""
  scale = float(np.std(expected))
  assert scale > 0
  np.testing.assert_allclose(actual, expected, atol=tolerance * scale)


@pytest.mark.parametrize("m,r", [(2, 2), (3, 2), (2, 3), (4, 3), (2, 4),
                                 (3, 4), (4, 4)])
def test_winograd_transforms_compute_the_correlation_exactly(m, r):
  a_t, g, b_t = winograd.transforms(m, r)
  assert a_t.shape == (m, m + r - 1) and g.shape == (m + r - 1, r)
  rng = np.random.default_rng(m * 10 + r)
  for _ in range(5):
    d = rng.standard_normal(m + r - 1)
    f = rng.standard_normal(r)
    expected = [sum(d[i + k] * f[k] for k in range(r)) for i in range(m)]
    np.testing.assert_allclose(a_t @ ((g @ f) * (b_t @ d)), expected,
                               rtol=1e-12, atol=1e-12)
  with pytest.raises(ValueError, match="interpolation points"):
    winograd.transforms(8, 4)


@pytest.mark.parametrize("shape,r,p", [
    ((2, 7, 9, 5), 4, 1), ((1, 6, 6, 3), 4, 0), ((2, 5, 8, 4), 4, 2),
    ((1, 4, 5, 3), 4, 3), ((2, 9, 7, 6), 3, 1), ((1, 6, 5, 2), 2, 0)])
def test_winograd_correlate_is_the_convolution_with_its_gradients(shape, r, p):
  x = _normal(shape, 0)
  kernel = _normal((r, r, shape[-1], 7), 1) / r

  def direct(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)),
                                    dimension_numbers=CONV_DIMENSIONS)
  expected, direct_vjp = jax.vjp(direct, x, kernel)
  actual, vjp = jax.vjp(lambda x, w: winograd.correlate(x, w, p), x, kernel)
  assert actual.shape == expected.shape
  _assert_close(actual, expected, 1e-5)
  grad = _normal(expected.shape, 2)
  for a, b in zip(vjp(grad), direct_vjp(grad)):
    _assert_close(a, b, 1e-5)


@pytest.mark.parametrize("shape", [(2, 10, 14, 5), (1, 4, 4, 3),
                                   (1, 12, 6, 8)])
def test_winograd_stride_2_forms_are_the_strided_convolution(shape):
  x = _normal(shape, 3)
  kernel = _normal((4, 4, shape[-1], 6), 4) / 4

  def direct(x, kernel):
    return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                    dimension_numbers=CONV_DIMENSIONS)
  expected, direct_vjp = jax.vjp(direct, x, kernel)
  _assert_close(winograd.strided(x, kernel), expected, 1e-5)
  grad = _normal(expected.shape, 5)
  grad_x, grad_kernel = direct_vjp(grad)
  _assert_close(winograd.strided_input_gradient(grad, kernel), grad_x, 1e-5)
  _assert_close(winograd.strided_weight_gradient(x, grad), grad_kernel, 1e-5)


@pytest.mark.parametrize("cls,kwargs,shape", [
    (layers.Conv1x, {"kernel_size": 4, "padding": 1}, (2, 9, 7, 5)),
    (layers.Conv2x, {}, (2, 10, 8, 5)),
    (layers.ConvTranspose2x, {}, (2, 5, 4, 5))])
def test_layers_in_winograd_forms_agree_with_xla(cls, kwargs, shape):
  x = _normal(shape, 6)
  modules = {"cpu": cls(6, backend=WINOGRAD_EVERYWHERE, **kwargs),
             "xla": cls(6, **kwargs)}
  variables = modules["xla"].init(jax.random.key(7), x)

  def loss(params, x, form):
    y = modules[form].apply({"params": params}, x)
    return jnp.sum(jnp.sin(3 * y)), y
  step = {form: jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
          for form in modules}
  # Every pass in Winograd's forms: no convolution is left.
  assert "conv_general_dilated" not in str(jax.make_jaxpr(
      lambda p, x: step["cpu"](p, x, "cpu"))(variables["params"], x))
  (_, y_cpu), grads_cpu = step["cpu"](variables["params"], x, "cpu")
  (_, y_xla), grads_xla = step["xla"](variables["params"], x, "xla")
  _assert_close(y_cpu, y_xla, 1e-5)
  for a, b in zip(jax.tree.leaves(grads_cpu), jax.tree.leaves(grads_xla)):
    _assert_close(a, b, 1e-4)


def test_winograd_only_for_wide_float32_layers():
  # The PatchGAN's 256 -> 512 stride-1 layer takes it; a layer to one
  # output, or in bfloat16, stays a convolution.
  forms = CpuConvForms()
  x = jnp.zeros((1, 16, 16, 256))

  def convolves(features, dtype=jnp.float32):
    kernel = jnp.zeros((4, 4, 256, features), dtype)
    jaxpr = jax.make_jaxpr(lambda x, w: forms.conv_stride1(x, w, 1))(
        x.astype(dtype), kernel)
    return "conv_general_dilated" in str(jaxpr)
  assert not convolves(512)
  assert convolves(1)
  assert convolves(512, jnp.bfloat16)


def test_outside_the_receptive_field_only_rounding():
  """Output (0, 0) reads input rows and columns -1..2 (4 x 4 kernel, padding
  1); its F(3 x 3, 4 x 4) tile, the outputs 0..2, reads -1..4 as one
  computation. Moving a pixel of that tile outside the field moves the
  output by rounding only (the transforms' products do not cancel
  exactly), a pixel beyond the tile not at all."""
  x = _normal((1, 9, 9, 4), 8)
  kernel = _normal((4, 4, 4, 3), 9) / 4

  def moved(row, col):
    before = winograd.correlate(x, kernel, 1)[0, 0, 0]
    after = winograd.correlate(x.at[0, row, col].add(1.0), kernel, 1)[0, 0, 0]
    return float(np.abs(np.asarray(after - before)).max())
  assert moved(2, 2) > 0.01                                  # In the field.
  assert max(moved(3, 3), moved(3, 0), moved(4, 1)) <= 1e-5  # In the tile.
  assert moved(5, 5) == moved(0, 6) == 0                     # Beyond it.


@pytest.mark.parametrize("k,p", [(4, 1), (6, 2), (8, 3)])
@pytest.mark.parametrize("shape", [(2, 1, 2, 3), (1, 3, 2, 5)])
def test_tap_products_where_taps_reach_past_a_small_input(k, p, shape):
  # With a kernel of 8 taps a row of 1 pixel is read 2 rows away: such
  # reads are zeros, and the output is still exactly twice the input.
  x = _normal(shape, 17)
  kernel = _normal((k, k, shape[-1], 4), 18)
  y = products.tap_products(x, kernel, p)
  assert y.shape == (shape[0], 2 * shape[1], 2 * shape[2], 4)
  np.testing.assert_allclose(y, layers.dilated_transpose(x, kernel, p, 0),
                             atol=1e-5, rtol=1e-5)


# -- Whole networks: a checkpoint moves between the forms ------------------------

@pytest.mark.parametrize("name,kwargs,channels,forms", [
    ("unet", {"num_downsamplings": 4, "ngf": 4, "dropout_rate": 0.0}, 1,
     CpuConvForms()),
    ("patchgan", {"ndf": 4}, 3, CpuConvForms()),
    ("dla", {"widths": (4, 8, 8), "remat": True}, 1, CpuConvForms()),
    ("unet", {"num_downsamplings": 4, "ngf": 4, "dropout_rate": 0.0}, 1,
     WINOGRAD_EVERYWHERE),
    ("patchgan", {"ndf": 4}, 3, WINOGRAD_EVERYWHERE)],
    ids=["unet", "patchgan", "dla_remat", "unet_winograd",
         "patchgan_winograd"])
def test_a_checkpoint_moves_between_the_forms(name, kwargs, channels, forms):
  """Variables initialized and trained one step in the CPU's forms give,
  in XLA's, the same outputs; a training step in either form gives the same
  outputs, gradients and batch statistics (DLA: with the recomputation,
  `nn.remat` in XLA's forms). Tolerances: float32 rounding of the same
  sums, Winograd's included (its bounds above)."""
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, channels))
  nets = {"cpu": models.build(name, conv_backend=forms, **kwargs),
          "xla": models.build(name, **kwargs)}
  variables = nets["cpu"].init(jax.random.key(1), x, train=False)
  assert (jax.tree.structure(nets["xla"].init(jax.random.key(1), x,
                                              train=False))
          == jax.tree.structure(variables))

  @jax.jit
  def step_and_eval(variables):
    def loss(params, form):
      y, updated = nets[form].apply({**variables, "params": params}, x,
                                    train=True, mutable=["batch_stats"])
      return jnp.sum(jnp.sin(y)), (y, updated["batch_stats"])
    steps = {form: jax.value_and_grad(loss, has_aux=True)(
        variables["params"], form) for form in nets}
    (_, (_, stats)), grads = steps["cpu"]
    trained = {"params": jax.tree.map(lambda p, g: p - 0.1 * g,
                                      variables["params"], grads),
               "batch_stats": stats}
    evals = {form: nets[form].apply(trained, x, train=False) for form in nets}
    return steps, evals

  steps, evals = step_and_eval(variables)
  (_, (y_cpu, stats_cpu)), grad_cpu = steps["cpu"]
  (_, (y_xla, stats_xla)), grad_xla = steps["xla"]
  np.testing.assert_allclose(y_xla, y_cpu, atol=1e-5)
  for a, b in zip(jax.tree.leaves((grad_xla, stats_xla)),
                  jax.tree.leaves((grad_cpu, stats_cpu))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(evals["xla"], evals["cpu"], atol=1e-5)
