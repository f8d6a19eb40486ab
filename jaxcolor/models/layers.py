"""Building blocks shared by the networks: initialisers, normalisation, and
stride-2 convolutions and transposed convolutions that XLA:CPU differentiates
quickly.
"""

import functools
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any
NormKind = Literal["batch", "instance", "none"]
NORM_KINDS = ("batch", "instance", "none")

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
  no normalisation at all the bias is likewise the only offset, so it is kept.
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


def _phase_taps(kernel_size: int, padding: int, phase: int) -> tuple[list[int], int, int]:
  """Taps of a stride-2 transposed convolution that reach output phase `phase`.

  PyTorch's ConvTranspose2d writes input i with tap t to output o = 2i - p + t.
  Output o = 2m + r therefore reads inputs i = m + (r + p - t) / 2 for every
  tap t with t = r + p (mod 2). Returned: the taps ordered by increasing input
  offset, and the (low, high) padding that makes those offsets a stride-1
  correlation over the input.
  """
  taps = [t for t in range(kernel_size) if (t - phase - padding) % 2 == 0]
  offsets = [(phase + padding - t) // 2 for t in taps]
  order = sorted(range(len(taps)), key=lambda j: offsets[j])
  taps = [taps[j] for j in order]
  offsets = sorted(offsets)
  return taps, -offsets[0], offsets[-1]


# -- Stride-2 convolutions in the forms XLA:CPU runs fast ---------------------
#
# Measured on XLA:CPU (jax 0.10.2; docs/benchmarks.md): a stride-2 convolution's
# forward pass and its weight gradient are fast, and so is a stride-1
# convolution; an lhs-dilated convolution (the input gradient of a stride-2
# convolution, the forward pass of `lax.conv_transpose`) is 2-3x slower, and the
# weight gradient of a stride-1 convolution whose window is the whole image (a
# phase convolution's) 2-3x slower again. And when a convolution's kernel
# covers more positions than its input (the innermost U-Net levels: 2 x 2
# inputs, 4 x 4 kernels), XLA swaps its operands into a form that runs 50x
# slower (0.65 s instead of 0.02 s for one 512-channel layer at batch 16).
# The two functions below compute the PyTorch semantics of Conv2d(k, stride=2,
# padding=p) and ConvTranspose2d(k, stride=2, padding=p) and choose, for each
# pass, the fast form of the same sums, using that each is the other's input
# gradient:
#
#   strided conv     forward: strided conv         (space-to-depth if tiny)
#                    input gradient: phase convolutions (transposed conv of g)
#                    weight gradient: strided conv's own
#   transposed conv  forward: phase convolutions
#                    input gradient: strided conv of g
#                    weight gradient: the strided conv's, with x as cotangent
#
# Kernels are HWIO in PyTorch's tap order; `_swap_io` turns a kernel into that
# of the adjoint (input and output channels exchanged).

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _swap_io(kernel: jax.Array) -> jax.Array:
  return jnp.swapaxes(kernel, 2, 3)


def _phase_convolutions(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """Transposed stride-2 convolution as four stride-1 convolutions, one per
  output phase (row parity x column parity), interleaved: [B, H, W, I] ->
  [B, 2H, 2W, O]. No dilation anywhere, so no slow form in the forward pass."""
  k = kernel.shape[0]
  batch, height, width, _ = x.shape
  if height == width == 1:
    # Output (r, c) reads only tap (r + p, c + p) of the one input pixel: a
    # matrix product (as convolutions XLA would swap the operands, 10x slower).
    return jnp.einsum("bi,hwio->bhwo", x[:, 0, 0],
                      kernel[padding:padding + 2, padding:padding + 2])
  phases = []
  for row_phase in (0, 1):
    row_taps, row_lo, row_hi = _phase_taps(k, padding, row_phase)
    cols = []
    for col_phase in (0, 1):
      col_taps, col_lo, col_hi = _phase_taps(k, padding, col_phase)
      sub_kernel = kernel[jnp.array(row_taps)][:, jnp.array(col_taps)]
      cols.append(lax.conv_general_dilated(
          x, sub_kernel, window_strides=(1, 1),
          padding=((row_lo, row_hi), (col_lo, col_hi)),
          dimension_numbers=_DIMENSIONS))
    phases.append(jnp.stack(cols, axis=3))       # [B, H, W, 2(col), O]
  y = jnp.stack(phases, axis=2)                    # [B, H, 2(row), W, 2, O]
  return y.reshape(batch, 2 * height, 2 * width, kernel.shape[-1])


def _strided(x: jax.Array, kernel: jax.Array, pads: tuple[int, int]) -> jax.Array:
  """`lax` stride-2 convolution, padding `pads` (low, high) on both axes."""
  return lax.conv_general_dilated(x, kernel, window_strides=(2, 2),
                                  padding=(pads, pads),
                                  dimension_numbers=_DIMENSIONS)


def _strided_forward(x: jax.Array, kernel: jax.Array,
                     pads: tuple[int, int]) -> jax.Array:
  """Stride-2 convolution; over the 2 x 2 space-to-depth input (a stride-1
  convolution with a kernel of half the side) when the kernel covers more
  positions than the input, where XLA would swap the operands."""
  k = kernel.shape[0]
  batch, height, width, channels = x.shape
  low, high = pads
  if ((height + low + high - k) // 2 == (width + low + high - k) // 2 == 0
      and low + max(height, width) <= k):
    # One output pixel: input (h, w) meets tap (h + low, w + low), a matrix
    # product (the innermost U-Net level, 2 x 2 -> 1 x 1).
    taps = kernel[low:low + height, low:low + width]
    return jnp.einsum("bhwi,hwio->bo", x, taps)[:, None, None, :]
  if (height * width >= k * k or k % 2 or low != high
      or (height + low + high) % 2 or (width + low + high) % 2):
    return _strided(x, kernel, pads)
  x = jnp.pad(x, ((0, 0), pads, pads, (0, 0)))
  rows, cols = (height + low + high) // 2, (width + low + high) // 2
  x = x.reshape(batch, rows, 2, cols, 2, channels).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(batch, rows, cols, 4 * channels)
  features = kernel.shape[-1]
  kernel = kernel.reshape(k // 2, 2, k // 2, 2, channels, features)
  kernel = kernel.transpose(0, 2, 1, 3, 4, 5).reshape(k // 2, k // 2,
                                                      4 * channels, features)
  return lax.conv_general_dilated(x, kernel, window_strides=(1, 1),
                                  padding="VALID", dimension_numbers=_DIMENSIONS)


def _transposed_pads(kernel_size: int, padding: int,
                     output_padding: int) -> tuple[int, int]:
  """Padding of the stride-2 convolution adjoint to a transposed one."""
  del kernel_size
  return padding, padding - output_padding


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_2x(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """PyTorch `Conv2d(k, stride=2, padding)`: [B, H, W, I] -> [B, H/2, W/2, O].

  Needs kernel_size - 2 * padding == 2 and even H, W (exact halving), so
  that the input gradient is the `conv_transpose_2x` of the output gradient.
  """
  return _strided_forward(x, kernel, (padding, padding))


def _conv_2x_forward(x, kernel, padding):
  return conv_2x(x, kernel, padding), (x, kernel)


def _conv_2x_backward(padding, residuals, grad):
  x, kernel = residuals
  grad_x = _phase_convolutions(grad, _swap_io(kernel), padding)
  _, pullback = jax.vjp(lambda w: _strided(x, w, (padding, padding)), kernel)
  (grad_kernel,) = pullback(grad)
  return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


conv_2x.defvjp(_conv_2x_forward, _conv_2x_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_transpose_2x(x: jax.Array, kernel: jax.Array, padding: int,
                      output_padding: int) -> jax.Array:
  """PyTorch `ConvTranspose2d(k, stride=2, padding, output_padding)` with
  k - 2 * padding + output_padding == 2: [B, H, W, I] -> [B, 2H, 2W, O]."""
  del output_padding  # Only the output size depends on it: exactly 2H here.
  return _phase_convolutions(x, kernel, padding)


def _conv_transpose_2x_forward(x, kernel, padding, output_padding):
  return conv_transpose_2x(x, kernel, padding, output_padding), (x, kernel)


def _conv_transpose_2x_backward(padding, output_padding, residuals, grad):
  x, kernel = residuals
  pads = _transposed_pads(kernel.shape[0], padding, output_padding)
  grad_x = _strided_forward(grad, _swap_io(kernel), pads)
  # The transposed convolution's weight gradient is the weight gradient of
  # its adjoint, the strided convolution of `grad`, with x as its cotangent.
  _, pullback = jax.vjp(lambda w: _strided(grad, w, pads), _swap_io(kernel))
  (grad_kernel,) = pullback(x)
  return grad_x.astype(x.dtype), _swap_io(grad_kernel).astype(kernel.dtype)


conv_transpose_2x.defvjp(_conv_transpose_2x_forward, _conv_transpose_2x_backward)


class Conv2x(nn.Module):
  """A stride-2 convolution that halves height and width.

  The same function and parameters as `nn.Conv(features, (k, k), strides=2,
  padding=padding)` (PyTorch's `Conv2d(in, out, k, stride=2, padding)`), with
  the passes computed in XLA:CPU's fast forms (`conv_2x`). Forward values are
  those of `nn.Conv`, except on inputs smaller than the kernel, which take the
  space-to-depth form (the same sums in another order).

  Attributes:
    features: output channels.
    kernel_size: square kernel side (4 in pix2pix and DCGAN).
    padding: zero padding on every side (1 in pix2pix); the input must be
      exactly halved: kernel_size - 2 * padding == 2, even height and width.
  """
  features: int
  kernel_size: int = 4
  padding: int = 1
  use_bias: bool = True
  kernel_init: Any = conv_init
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.padding
    height, width = x.shape[1:3]
    if k - 2 * p != 2 or height % 2 or width % 2:
      raise ValueError(
          f"Conv2x halves even sizes exactly: it needs kernel_size - 2*padding "
          f"== 2 and an even input; got kernel_size={k}, padding={p}, input "
          f"{height}x{width}.")
    kernel = self.param("kernel", self.kernel_init,
                        (k, k, x.shape[-1], self.features), self.param_dtype)
    y = conv_2x(x.astype(self.dtype), kernel.astype(self.dtype), p)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class ConvTranspose2x(nn.Module):
  """A stride-2 transposed convolution that doubles height and width.

  The same function and parameters as `torch.nn.ConvTranspose2d(in, out,
  kernel_size, stride=2, padding, output_padding)` with the kernel stored as
  `kernel[kh, kw, in, out]` in PyTorch's tap order (`weight.permute(2, 3, 0, 1)`
  converts a PyTorch weight). Its forward pass is four stride-1 convolutions,
  one per output phase (row parity x column parity), interleaved; its
  gradients are those of the adjoint strided convolution (`conv_transpose_2x`).
  XLA:CPU takes the weight gradient of `lax.conv_transpose` (an lhs-dilated
  convolution) 60-90x slower than its forward (see ../shared/STACK.md).

  Attributes:
    features: output channels.
    kernel_size: square kernel side (4 in pix2pix).
    padding: PyTorch's `padding` (1 in pix2pix).
    output_padding: PyTorch's `output_padding`; the output must be exactly
      twice the input, i.e. kernel_size - 2 * padding + output_padding == 2.
  """
  features: int
  kernel_size: int = 4
  padding: int = 1
  output_padding: int = 0
  use_bias: bool = True
  kernel_init: Any = conv_init
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.padding
    if k - 2 * p + self.output_padding != 2:
      raise ValueError(
          f"ConvTranspose2x needs kernel_size - 2*padding + output_padding == 2 "
          f"to double the size; got kernel_size={k}, padding={p}, "
          f"output_padding={self.output_padding}.")
    kernel = self.param("kernel", self.kernel_init,
                        (k, k, x.shape[-1], self.features), self.param_dtype)
    y = conv_transpose_2x(x.astype(self.dtype), kernel.astype(self.dtype), p,
                          self.output_padding)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y
