"""Shared building blocks: ConvTranspose2x against PyTorch's formula, Conv2x
against nn.Conv, Normalization."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax

from jaxcolor.models import layers

# (kernel_size, padding, output_padding): every configuration that doubles the size.
CONFIGS = [(4, 1, 0), (3, 1, 1), (2, 0, 0)]


def scatter_conv_transpose(x, kernel, padding, output_padding):
  """PyTorch's ConvTranspose2d(stride=2) written as its definition.

  Input pixel (i, j) adds x[i, j] @ kernel[th, tw] to output pixel
  (2i - padding + th, 2j - padding + tw); the output has (H - 1) * 2 -
  2 * padding + k + output_padding rows. x: [B, H, W, I]; kernel: [k, k, I, O].
  """
  batch, height, width, _ = x.shape
  k = kernel.shape[0]
  out_h = (height - 1) * 2 - 2 * padding + k + output_padding
  out_w = (width - 1) * 2 - 2 * padding + k + output_padding
  # Written into a frame with `padding` extra rows/columns on each side.
  full = np.zeros((batch, out_h + 2 * padding, out_w + 2 * padding, kernel.shape[-1]))
  for i in range(height):
    for j in range(width):
      for th in range(k):
        for tw in range(k):
          full[:, 2 * i + th, 2 * j + tw] += x[:, i, j] @ kernel[th, tw]
  return full[:, padding:padding + out_h, padding:padding + out_w]


def lax_conv_transpose(x, kernel, padding, output_padding):
  """The same function as an lhs-dilated convolution (XLA's transposed conv).

  A transposed convolution correlates the 2x-dilated input with the spatially
  flipped kernel, padded by k - 1 - padding (+ output_padding at the end).
  """
  k = kernel.shape[0]
  lo, hi = k - 1 - padding, k - 1 - padding + output_padding
  return lax.conv_transpose(
      x, kernel[::-1, ::-1], strides=(2, 2), padding=((lo, hi), (lo, hi)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def normal(shape, seed):
  # NumPy draws: on CPU, compiling threefry costs seconds for every new shape.
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _init_transpose(k, p, op, x, features=5):
  module = layers.ConvTranspose2x(features, kernel_size=k, padding=p,
                                  output_padding=op)
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
  assert shapes["kernel"].shape == (k, k, x.shape[-1], features)
  # A bias away from zero, so a dropped bias would show.
  params = {"kernel": normal(shapes["kernel"].shape, seed=k),
            "bias": normal(shapes["bias"].shape, seed=k + 1)}
  return module, params


# Both forward forms: few outputs (matrix product and shifted sums, as every
# generator's ab layer) and more than `layers._FEW_OUTPUTS` (convolutions).
FEATURES = [5, layers._FEW_OUTPUTS + 3]


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("k,p,op", CONFIGS)
def test_conv_transpose_2x_matches_pytorch_formula(k, p, op, features):
  x = normal((2, 5, 6, 3), seed=2)
  module, params = _init_transpose(k, p, op, x, features)
  y = module.apply({"params": params}, x)
  expected = scatter_conv_transpose(
      np.asarray(x, np.float64), np.asarray(params["kernel"], np.float64), p, op)
  expected += np.asarray(params["bias"])
  assert y.shape == (2, 10, 12, features)
  np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(
      lax_conv_transpose(x, params["kernel"], p, op) + params["bias"], expected,
      atol=1e-5, rtol=1e-5)


# Both forms of the weight gradient: the patch product (100 inputs: with few
# outputs, its operands the other way round) and, with the patch limit
# lowered to nothing, the adjoint convolution's.
@pytest.mark.parametrize("max_patches", [None, 0])
@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (1, 5, 4, 3), (1, 3, 4, 100)])
@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("k,p,op", CONFIGS)
def test_conv_transpose_2x_gradient_matches_lax_conv_transpose(
    k, p, op, features, shape, max_patches, monkeypatch):
  if max_patches is not None:
    monkeypatch.setattr(layers, "_MAX_PATCHES", max_patches)
  x = normal(shape, seed=3)
  module, params = _init_transpose(k, p, op, x, features)
  cotangent = normal((shape[0], 2 * shape[1], 2 * shape[2], features), seed=4)

  def ours(params, x):
    return module.apply({"params": params}, x)

  def reference(params, x):
    return lax_conv_transpose(x, params["kernel"], p, op) + params["bias"]

  @jax.jit
  def outputs_and_gradients(params, x):
    y, vjp = jax.vjp(ours, params, x)
    y_ref, vjp_ref = jax.vjp(reference, params, x)
    return y, y_ref, vjp(cotangent), vjp_ref(cotangent)

  y, y_ref, (grad_params, grad_x), (ref_params, ref_x) = outputs_and_gradients(
      params, x)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(grad_x, ref_x, atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(grad_params["kernel"], ref_params["kernel"],
                             atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(grad_params["bias"], ref_params["bias"],
                             atol=1e-4, rtol=1e-5)


def test_conv_transpose_2x_rejects_sizes_that_do_not_double():
  module = layers.ConvTranspose2x(4, kernel_size=4, padding=2)
  with pytest.raises(ValueError, match="kernel_size=4, padding=2"):
    module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 2)))


@pytest.mark.parametrize("k,p,op", CONFIGS)
def test_conv_transpose_2x_matches_torch(k, p, op):
  torch = pytest.importorskip("torch")
  x = normal((2, 5, 7, 3), seed=5)
  module, params = _init_transpose(k, p, op, x)
  reference = torch.nn.ConvTranspose2d(3, 5, k, stride=2, padding=p,
                                       output_padding=op)
  with torch.no_grad():
    reference.weight.copy_(torch.from_numpy(
        np.asarray(params["kernel"]).transpose(2, 3, 0, 1).copy()))
    reference.bias.copy_(torch.from_numpy(np.array(params["bias"])))
    expected = reference(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()))
  y = module.apply({"params": params}, x)
  np.testing.assert_allclose(y, expected.numpy().transpose(0, 2, 3, 1),
                             atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k,p,op", CONFIGS)
def test_conv_transpose_2x_of_one_pixel_and_its_gradients(k, p, op):
  # A 1 x 1 input (the innermost U-Net level) takes the matrix-product form.
  x = normal((3, 1, 1, 4), seed=11)
  kernel = normal((k, k, 4, 5), seed=12)
  cotangent = normal((3, 2, 2, 5), seed=13)
  y, vjp = jax.vjp(lambda x, w: layers.conv_transpose_2x(x, w, p, op), x, kernel)
  y_ref, vjp_ref = jax.vjp(
      lambda x, w: lax_conv_transpose(x, w, p, op), x, kernel)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
  for ours, ref in zip(vjp(cotangent), vjp_ref(cotangent)):
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-5)


# Input sizes through every form of conv_2x: the strided convolution and its
# own weight gradient (more than `layers._SMALL_OUTPUT` output positions and
# more than `_FEW_INPUTS` channels), the patch product with a convolution's
# weight gradient (more than `_SMALL_WEIGHT_GRADIENT`), patch products in
# both (also for few channels at any size), and the matrix product of one
# output pixel.
@pytest.mark.parametrize("shape", [(1, 18, 20, 5), (1, 18, 20, 3),
                                   (2, 10, 8, 5), (2, 8, 6, 3), (2, 4, 4, 3),
                                   (3, 2, 4, 2), (2, 2, 2, 5)])
def test_conv_2x_is_nn_conv_with_the_same_gradients(shape):
  x = normal(shape, seed=14)
  ours = layers.Conv2x(6)
  reference = nn.Conv(6, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                      kernel_init=layers.conv_init)
  variables = ours.init(jax.random.key(0), x)
  # Same parameter tree and initial values as nn.Conv.
  jax.tree.map(np.testing.assert_array_equal, variables,
               reference.init(jax.random.key(0), x))
  variables = jax.tree.map(lambda v: normal(v.shape, seed=15), variables)
  cotangent = normal((shape[0], shape[1] // 2, shape[2] // 2, 6), seed=16)
  y, vjp = jax.vjp(ours.apply, variables, x)
  y_ref, vjp_ref = jax.vjp(reference.apply, variables, x)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
  (grads, grad_x), (grads_ref, grad_x_ref) = vjp(cotangent), vjp_ref(cotangent)
  np.testing.assert_allclose(grad_x, grad_x_ref, atol=1e-4, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4,
                                                       rtol=1e-5),
               grads, grads_ref)


def test_conv_2x_rejects_what_it_cannot_halve():
  with pytest.raises(ValueError, match="input 5x4"):
    layers.Conv2x(4).init(jax.random.key(0), jnp.zeros((1, 5, 4, 2)))
  with pytest.raises(ValueError, match="kernel_size=4, padding=2"):
    layers.Conv2x(4, padding=2).init(jax.random.key(0), jnp.zeros((1, 4, 4, 2)))


def test_uses_bias():
  assert not layers.uses_bias("batch")
  assert layers.uses_bias("instance")
  assert layers.uses_bias("none")
  with pytest.raises(ValueError, match="group"):
    layers.uses_bias("group")


def test_batch_normalization_train_and_eval():
  x = 3.0 + 2.0 * normal((4, 5, 5, 3), seed=6)
  module = layers.Normalization("batch")
  variables = module.init(jax.random.key(7, impl="rbg"), x, train=False)
  scale = variables["params"]["BatchNorm_0"]["scale"]
  bias = variables["params"]["BatchNorm_0"]["bias"]
  assert not np.allclose(scale, 1.0)  # bn_scale_init: N(1, 0.02)

  y, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
  mean = x.mean(axis=(0, 1, 2))
  var = x.var(axis=(0, 1, 2))
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5) * scale + bias,
                             atol=1e-5)
  stats = updates["batch_stats"]["BatchNorm_0"]
  # PyTorch's momentum 0.1: running = 0.9 * running + 0.1 * batch.
  np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5)

  # Eval normalizes with the running statistics and changes none of them.
  y_eval = module.apply(variables, x, train=False)
  np.testing.assert_allclose(y_eval, x / np.sqrt(1.0 + 1e-5) * scale + bias,
                             atol=1e-5)


def test_instance_normalization_has_no_parameters():
  x = 3.0 + 2.0 * normal((2, 6, 6, 3), seed=8)
  module = layers.Normalization("instance")
  variables = module.init(jax.random.key(0), x, train=True)
  assert not jax.tree.leaves(variables)
  y = module.apply(variables, x, train=True)
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, atol=1e-3)
  # Per sample: train and eval are the same function.
  np.testing.assert_allclose(module.apply(variables, x, train=False), y)


def test_no_normalization_is_identity():
  x = normal((2, 3, 3, 4), seed=9)
  module = layers.Normalization("none")
  variables = module.init(jax.random.key(0), x, train=True)
  assert not jax.tree.leaves(variables)
  np.testing.assert_array_equal(module.apply(variables, x, train=True), x)


def test_unknown_normalization_raises():
  with pytest.raises(ValueError, match="layer"):
    layers.Normalization("layer").init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)),
                                       train=False)


# -- conv_impl: XLA's own forms against the XLA:CPU ones ------------------------

@pytest.mark.parametrize("cls,kwargs", [
    (layers.Conv2x, {}), (layers.ConvTranspose2x, {}),
    (layers.ConvTranspose2x, {"kernel_size": 3, "output_padding": 1})])
def test_both_conv_impls_compute_the_same_function_and_gradients(cls, kwargs):
  x = jax.random.normal(jax.random.key(0), (2, 12, 10, 3))
  modules = {impl: cls(5, impl=impl, **kwargs) for impl in ("cpu", "xla")}
  variables = modules["cpu"].init(jax.random.key(1), x)
  assert (jax.tree.structure(modules["xla"].init(jax.random.key(1), x))
          == jax.tree.structure(variables))

  def loss(variables, x, impl):
    return jnp.sum(jnp.sin(modules[impl].apply(variables, x)))

  outputs = {i: modules[i].apply(variables, x) for i in modules}
  grads = {i: jax.grad(loss, argnums=(0, 1))(variables, x, i) for i in modules}
  np.testing.assert_allclose(outputs["xla"], outputs["cpu"], atol=1e-5)
  for a, b in zip(jax.tree.leaves(grads["xla"]), jax.tree.leaves(grads["cpu"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_resolve_conv_impl():
  assert layers.resolve_conv_impl("auto") == (
      "cpu" if jax.default_backend() == "cpu" else "xla")
  assert layers.resolve_conv_impl("xla") == "xla"
  assert layers.resolve_conv_impl("cpu") == "cpu"
  with pytest.raises(ValueError, match="conv_impl='gpu'"):
    layers.resolve_conv_impl("gpu")
  from jaxcolor import configuration
  assert configuration.CONV_IMPLS == layers.CONV_IMPLS


@pytest.mark.parametrize("k,p", [(4, 1), (6, 2), (8, 3)])
@pytest.mark.parametrize("shape", [(2, 1, 2, 3), (1, 3, 2, 5)])
def test_tap_products_where_taps_reach_past_a_small_input(k, p, shape):
  # With a kernel of 8 taps a row of 1 pixel is read 2 rows away: such
  # reads are zeros, and the output is still exactly twice the input.
  x = normal(shape, seed=17)
  kernel = normal((k, k, shape[-1], 4), seed=18)
  y = layers._tap_products(x, kernel, p)
  assert y.shape == (shape[0], 2 * shape[1], 2 * shape[2], 4)
  np.testing.assert_allclose(y, layers._dilated_transpose(x, kernel, p, 0),
                             atol=1e-5, rtol=1e-5)


def _ynn_convolutions(compiled) -> int:
  """YNNPACK fusions in a compiled CPU program whose body convolves."""
  text = compiled.as_text()
  count = 0
  for name in re.findall(r"calls=(%[\w.\-]+)[^\n]*__ynn_fusion", text):
    body = text[text.index(f"\n{name} "):]
    count += " convolution(" in body[:body.index("\n}")]
  return count


def test_compiler_options_move_convolutions_off_ynnpack(monkeypatch):
  # On the CPU, the default config's programs convolve in XLA's own kernels
  # and keep YNNPACK's matrix products; 'ynnpack', or the user's own
  # XLA_FLAGS for the same option, leaves XLA's defaults.
  if jax.default_backend() != "cpu":
    pytest.skip("XLA:CPU's option")
  config = ml_collections.ConfigDict({"cpu_conv_library": "eigen"})
  options = layers.compiler_options(config)
  assert options is not None
  x, kernel = normal((2, 8, 8, 16), seed=1), normal((4, 4, 16, 32), seed=2)

  def network(x, kernel):
    y = lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                 dimension_numbers=layers._DIMENSIONS)
    return y.reshape(-1, 32) @ kernel.reshape(-1, 32).T

  default = jax.jit(network).lower(x, kernel).compile()
  eigen = jax.jit(network, compiler_options=options).lower(x, kernel).compile()
  assert _ynn_convolutions(default) == 1
  assert _ynn_convolutions(eigen) == 0
  assert "__ynn_fusion" in eigen.as_text()  # The product stays on YNNPACK.
  np.testing.assert_allclose(eigen(x, kernel), default(x, kernel),
                             rtol=1e-5, atol=1e-4)

  assert layers.compiler_options(
      ml_collections.ConfigDict({"cpu_conv_library": "ynnpack"})) is None
  assert layers.compiler_options(ml_collections.ConfigDict()) == options
  monkeypatch.setenv("XLA_FLAGS",
                     "--xla_cpu_experimental_ynn_fusion_type=-individual_dot")
  assert layers.compiler_options(config) is None
  with pytest.raises(ValueError, match="cpu_conv_library='mkl'"):
    layers.compiler_options(ml_collections.ConfigDict(
        {"cpu_conv_library": "mkl"}))
  from jaxcolor import configuration
  assert configuration.CPU_CONV_LIBRARIES == layers.CPU_CONV_LIBRARIES


def test_training_step_and_colorizer_compile_with_the_config_library():
  # The option reaches the programs users run: the training step and the
  # colorize network of the smoke pix2pix config.
  if jax.default_backend() != "cpu":
    pytest.skip("XLA:CPU's option")
  import helpers  # noqa: PLC0415
  from jaxcolor import colorize  # noqa: PLC0415
  from jaxcolor import experiment  # noqa: PLC0415
  from jaxcolor import parallel  # noqa: PLC0415
  from jaxcolor import train_step  # noqa: PLC0415
  counts = {}
  for library in ("eigen", "ynnpack"):
    config = helpers.load_config("configs/pix2pix.py")
    config.cpu_conv_library = library
    config.generator.ngf = 32  # Wide enough for YNNPACK to take the
    config.image_size = 64     # generator's convolutions.
    built = experiment.build(config, data="none",
                             devices=jax.local_devices()[:1])
    step, _ = train_step.jit_train_step(built.system, built.mesh,
                                        built.abstract_state)
    batch = parallel.global_batch(
        helpers.random_batch(config.batch_size, config.image_size), built.mesh)
    compiled = step.lower(built.abstract_state, batch, built.step_rng).compile()
    state = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                         built.abstract_state)
    colorizer = colorize.Colorizer(built.system, state,
                                   image_size=config.image_size, batch_size=2)
    rgb = np.zeros((2, config.image_size, config.image_size, 3), np.uint8)
    counts[library] = (_ynn_convolutions(compiled),
                       _ynn_convolutions(colorizer.lowered(rgb).compile()))
  assert counts["eigen"] == (0, 0)
  assert min(counts["ynnpack"]) > 0
