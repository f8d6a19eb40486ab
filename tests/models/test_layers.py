"""The square convolutions of models/layers.py, in XLA's form and handed the
CPU's forms (jaxcolor/backends/xla_cpu/): ConvTranspose2x against PyTorch's
formula, Conv2x against nn.Conv, each with its gradients; Normalization.
Whole networks in both forms: tests/test_backends.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcolor.backends.xla_cpu import CpuConvForms
from jaxcolor.models import layers

# (kernel_size, padding, output_padding): every configuration that doubles the size.
CONFIGS = [(4, 1, 0), (3, 1, 1), (2, 0, 0)]

# Every form of a transposed convolution: XLA's lhs-dilated convolution
# (None); the CPU's tap product with the patch product for the weight
# gradient (5 outputs are few); and, with both thresholds at nothing, its
# phase convolutions with the adjoint convolution's weight gradient.
BACKENDS = {"xla": None, "cpu": CpuConvForms(),
            "cpu_phases": CpuConvForms(few_outputs=0, max_patches=0)}


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
  """The same function as JAX's own transposed convolution.

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


def _init_transpose(k, p, op, x, backend=None, features=5):
  module = layers.ConvTranspose2x(features, kernel_size=k, padding=p,
                                  output_padding=op, backend=backend)
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
  assert shapes["kernel"].shape == (k, k, x.shape[-1], features)
  # A bias away from zero, so a dropped bias would show.
  params = {"kernel": normal(shapes["kernel"].shape, seed=k),
            "bias": normal(shapes["bias"].shape, seed=k + 1)}
  return module, params


@pytest.mark.parametrize("backend", BACKENDS.values(), ids=BACKENDS.keys())
@pytest.mark.parametrize("k,p,op", CONFIGS)
def test_conv_transpose_2x_matches_pytorch_formula(k, p, op, backend):
  x = normal((2, 5, 6, 3), seed=2)
  module, params = _init_transpose(k, p, op, x, backend)
  y = module.apply({"params": params}, x)
  expected = scatter_conv_transpose(
      np.asarray(x, np.float64), np.asarray(params["kernel"], np.float64), p, op)
  expected += np.asarray(params["bias"])
  assert y.shape == (2, 10, 12, 5)
  np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)


# The CPU's forms of both gradients. 100 inputs: the patch product of the
# weight gradient with its operands the other way round (few outputs).
@pytest.mark.parametrize("backend", [BACKENDS["cpu"], BACKENDS["cpu_phases"]],
                         ids=["cpu", "cpu_phases"])
@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (1, 5, 4, 3), (1, 3, 4, 100)])
@pytest.mark.parametrize("k,p,op", CONFIGS)
def test_conv_transpose_2x_gradient_matches_lax_conv_transpose(
    k, p, op, shape, backend):
  x = normal(shape, seed=3)
  module, params = _init_transpose(k, p, op, x, backend)
  cotangent = normal((shape[0], 2 * shape[1], 2 * shape[2], 5), seed=4)

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
  forms = CpuConvForms()
  y, vjp = jax.vjp(
      lambda x, w: forms.conv_transpose_stride2(x, w, p, op), x, kernel)
  y_ref, vjp_ref = jax.vjp(
      lambda x, w: lax_conv_transpose(x, w, p, op), x, kernel)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
  for ours, ref in zip(vjp(cotangent), vjp_ref(cotangent)):
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-5)


# Input sizes through every CPU form of a strided convolution: XLA's own and
# its own weight gradient (more than `small_output` output positions and
# more than `few_inputs` channels), the patch product with a convolution's
# weight gradient (more than `small_weight_gradient`), patch products in
# both (also for few channels at any size), and the matrix product of one
# output pixel; and XLA's form once.
@pytest.mark.parametrize("shape,backend", [
    ((1, 18, 20, 5), CpuConvForms()), ((1, 18, 20, 3), CpuConvForms()),
    ((2, 10, 8, 5), CpuConvForms()), ((2, 8, 6, 3), CpuConvForms()),
    ((2, 4, 4, 3), CpuConvForms()), ((3, 2, 4, 2), CpuConvForms()),
    ((2, 2, 2, 5), CpuConvForms()), ((2, 10, 8, 5), None)])
def test_conv_2x_is_nn_conv_with_the_same_gradients(shape, backend):
  x = normal(shape, seed=14)
  ours = layers.Conv2x(6, backend=backend)
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


def test_conv_1x_is_nn_conv():
  x = normal((2, 7, 6, 3), seed=19)
  ours = layers.Conv1x(4, kernel_size=3, padding=1)
  reference = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)),
                      kernel_init=layers.conv_init)
  variables = ours.init(jax.random.key(0), x)
  jax.tree.map(np.testing.assert_array_equal, variables,
               reference.init(jax.random.key(0), x))
  np.testing.assert_allclose(ours.apply(variables, x),
                             reference.apply(variables, x), atol=1e-6)
  with pytest.raises(ValueError, match="kernel_size=3, padding=3"):
    layers.Conv1x(4, kernel_size=3, padding=3).init(jax.random.key(0), x)


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
