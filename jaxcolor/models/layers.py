"""Building blocks shared by the networks: initializers, normalization, and
the square convolutions (stride 1, stride 2, transposed stride 2).

The convolutions are XLA's own (`lax.conv_general_dilated`, differentiated
by JAX). A layer handed a `backend` (`jaxcolor.backends.select`: the
networks' `conv_backend`) lets it compute the same function of the same
parameters in its own forms, as the CPU's do (jaxcolor/backends/xla_cpu/);
the parameters are declared here either way, so a checkpoint moves between
forms unchanged. The backend object needs `conv_stride1(x, kernel, padding)`,
`conv_stride2(x, kernel, padding)` and `conv_transpose_stride2(x, kernel,
padding, output_padding)`, each on arrays already in the compute dtype.
"""

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcolor.core.choices import CONV_DIMENSIONS, NORM_KINDS

Dtype = Any
NormKind = Literal["batch", "instance", "none"]

# pix2pix reference `init_weights(init_type='normal', init_gain=0.02)`: conv
# weights N(0, 0.02), biases 0, batch-norm scale N(1, 0.02) and offset 0.
conv_init = nn.initializers.normal(stddev=0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def check_norm(norm: str) -> None:
  if norm not in NORM_KINDS:
    raise ValueError(f"norm={norm!r}; expected one of {', '.join(NORM_KINDS)}.")


def uses_bias(norm: str) -> bool:
  """A convolution carries a bias unless a batch norm follows it.

  The reference sets `use_bias = norm_layer == InstanceNorm2d`; its instance
  norm has no affine parameters, so the bias is the layer's only offset. With
  no normalization at all the bias is likewise the only offset, so it is kept.
  """
  check_norm(norm)
  return norm != "batch"


class Normalization(nn.Module):
  """Batch norm, instance norm (no affine, as PyTorch's default) or identity.

  Batch norm follows PyTorch's defaults (momentum 0.1, i.e. Flax momentum 0.9,
  epsilon 1e-5). Under `jax.jit` over a sharded batch its statistics are those
  of the global batch (synchronised batch norm), with no explicit collective.
  """
  kind: NormKind = "batch"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    check_norm(self.kind)
    if self.kind == "batch":
      return nn.BatchNorm(
          use_running_average=not train, momentum=0.9, epsilon=1e-5,
          scale_init=bn_scale_init, dtype=self.dtype,
          param_dtype=self.param_dtype)(x)
    if self.kind == "instance":
      return nn.InstanceNorm(
          epsilon=1e-5, use_scale=False, use_bias=False, dtype=self.dtype,
          param_dtype=self.param_dtype)(x)
    return x


class _SquareConv(nn.Module):
  """The fields `Conv1x`, `Conv2x` and `ConvTranspose2x` share (see
  theirs)."""
  features: int
  kernel_size: int = 4
  padding: int = 1
  use_bias: bool = True
  kernel_init: Any = conv_init
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  backend: Any = None


class Conv2x(_SquareConv):
  """A stride-2 convolution that halves height and width.

  The same function and parameters as `nn.Conv(features, (k, k), strides=2,
  padding=padding)` (PyTorch's `Conv2d(in, out, k, stride=2, padding)`):
  XLA's strided convolution, or `backend.conv_stride2`.

  Attributes:
    features: output channels.
    kernel_size: square kernel side (4 in pix2pix and DCGAN).
    padding: zero padding on every side (1 in pix2pix); the input must be
      exactly halved: kernel_size - 2 * padding == 2, even height and width.
    backend: None (XLA's convolution) or the forms that compute it
      (module docstring).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.padding
    height, width = x.shape[1:3]
    if k - 2 * p != 2 or height % 2 or width % 2:
      raise ValueError(
          f"Conv2x halves even sizes exactly: it needs kernel_size - 2*padding "
          f"== 2 and an even input; got kernel_size={k}, padding={p}, input "
          f"{height}x{width}.")
    if self.backend is not None:
      return _kernel_bias_apply(
          self, x, lambda x, w: self.backend.conv_stride2(x, w, p))
    return _kernel_bias_apply(self, x, lambda x, w: lax.conv_general_dilated(
        x, w, (2, 2), ((p, p), (p, p)), dimension_numbers=CONV_DIMENSIONS))


class ConvTranspose2x(_SquareConv):
  """A stride-2 transposed convolution that doubles height and width.

  The same function and parameters as `torch.nn.ConvTranspose2d(in, out,
  kernel_size, stride=2, padding, output_padding)` with the kernel stored as
  `kernel[kh, kw, in, out]` in PyTorch's tap order (`weight.permute(2, 3, 0, 1)`
  converts a PyTorch weight): XLA's lhs-dilated convolution, or
  `backend.conv_transpose_stride2`.

  Attributes:
    features: output channels.
    kernel_size: square kernel side (4 in pix2pix).
    padding: PyTorch's `padding` (1 in pix2pix).
    output_padding: PyTorch's `output_padding`; the output must be exactly
      twice the input, i.e. kernel_size - 2 * padding + output_padding == 2.
    backend: None (XLA's convolution) or the forms that compute it
      (module docstring).
  """
  output_padding: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p, op = self.kernel_size, self.padding, self.output_padding
    if k - 2 * p + op != 2:
      raise ValueError(
          f"ConvTranspose2x needs kernel_size - 2*padding + output_padding == 2 "
          f"to double the size; got kernel_size={k}, padding={p}, "
          f"output_padding={op}.")
    if self.backend is not None:
      return _kernel_bias_apply(self, x, lambda x, w: (
          self.backend.conv_transpose_stride2(x, w, p, op)))
    return _kernel_bias_apply(
        self, x, lambda x, w: dilated_transpose(x, w, p, op))


class Conv1x(_SquareConv):
  """A stride-1 convolution, PyTorch's `Conv2d(in, out, k, padding)`.

  The same function and parameters as `nn.Conv(features, (k, k),
  padding=((p, p), (p, p)))`: XLA's convolution, or `backend.conv_stride1`.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    padding: zero padding on every side, at most kernel_size - 1.
    backend: None (XLA's convolution) or the forms that compute it
      (module docstring).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.padding
    if not 0 <= p < k:
      raise ValueError(f"Conv1x needs 0 <= padding < kernel_size; got "
                       f"kernel_size={k}, padding={p}.")
    if self.backend is not None:
      return _kernel_bias_apply(
          self, x, lambda x, w: self.backend.conv_stride1(x, w, p))
    return _kernel_bias_apply(self, x, lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), ((p, p), (p, p)), dimension_numbers=CONV_DIMENSIONS))


def dilated_transpose(x: jax.Array, kernel: jax.Array, padding: int,
                      output_padding: int) -> jax.Array:
  """PyTorch's stride-2 transposed convolution as XLA's lhs-dilated one.

  Input i with tap t lands on output o = 2i - p + t; on the input dilated by
  2 and padded by k - 1 - p, a correlation with the kernel flipped in space
  reads the same products (tap t is flipped tap k - 1 - t).
  """
  k = kernel.shape[0]
  low, high = k - 1 - padding, k - 1 - padding + output_padding
  return lax.conv_general_dilated(
      x, jnp.flip(kernel, (0, 1)), (1, 1), ((low, high), (low, high)),
      lhs_dilation=(2, 2), dimension_numbers=CONV_DIMENSIONS)


def _kernel_bias_apply(module: nn.Module, x: jax.Array, convolve) -> jax.Array:
  """`convolve(x, kernel) + bias` in `module.dtype`, declaring the module's
  parameters: `kernel` [k, k, in, features] and, with `use_bias`, `bias`
  (zeros). Shared by the square convolutions, whose parameters are laid
  out alike in every form."""
  k = module.kernel_size
  kernel = module.param("kernel", module.kernel_init,
                        (k, k, x.shape[-1], module.features),
                        module.param_dtype)
  y = convolve(x.astype(module.dtype), kernel.astype(module.dtype))
  if module.use_bias:
    bias = module.param("bias", nn.initializers.zeros, (module.features,),
                        module.param_dtype)
    y = y + bias.astype(module.dtype)
  return y
