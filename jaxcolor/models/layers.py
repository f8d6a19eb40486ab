"""Building blocks shared by the networks: initialisers, normalisation, and a
stride-2 transposed convolution that XLA:CPU differentiates quickly.
"""

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


class ConvTranspose2x(nn.Module):
  """A stride-2 transposed convolution that doubles height and width.

  The same function and parameters as `torch.nn.ConvTranspose2d(in, out,
  kernel_size, stride=2, padding, output_padding)` with the kernel stored as
  `kernel[kh, kw, in, out]` in PyTorch's tap order (`weight.permute(2, 3, 0, 1)`
  converts a PyTorch weight). It is computed as four stride-1 convolutions, one
  per output phase (row parity x column parity), interleaved: XLA:CPU takes
  the weight gradient of an lhs-dilated convolution 60-90x slower than its
  forward (see ../shared/STACK.md), and this form has no dilation at all.

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
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    batch, height, width, _ = x.shape
    phases = []
    for row_phase in (0, 1):
      row_taps, row_lo, row_hi = _phase_taps(k, p, row_phase)
      cols = []
      for col_phase in (0, 1):
        col_taps, col_lo, col_hi = _phase_taps(k, p, col_phase)
        sub_kernel = kernel[jnp.array(row_taps)][:, jnp.array(col_taps)]
        cols.append(lax.conv_general_dilated(
            x, sub_kernel, window_strides=(1, 1),
            padding=((row_lo, row_hi), (col_lo, col_hi)),
            dimension_numbers=("NHWC", "HWIO", "NHWC")))
      phases.append(jnp.stack(cols, axis=3))       # [B, H, W, 2(col), C]
    y = jnp.stack(phases, axis=2)                    # [B, H, 2(row), W, 2, C]
    y = y.reshape(batch, 2 * height, 2 * width, self.features)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y
