"""Building blocks shared by the networks: initializers, normalization, and
convolutions (stride 1, stride 2, transposed stride 2) in two implementations.

`conv_impl` picks them (`resolve_conv_impl` is the one place that decides):
'xla' is XLA's own convolution (`lax.conv_general_dilated`, differentiated by
JAX), the ordinary and fastest form on GPU and TPU; 'cpu' is the custom-VJP
forms below, which XLA:CPU differentiates quickly, and for the larger 4 x 4
layers Winograd's minimal filtering (jaxcolor/models/winograd.py: fewer
products for the same sums; docs/benchmarks.md);
'auto' takes 'cpu' on the CPU backend and 'xla' on every other. Both compute
the same function of the same parameters (tests/models/test_layers.py;
Winograd's forms to rounding, tests/models/test_winograd.py), so a
checkpoint trained with one runs with the other. On the CPU backend,
`compiler_options` also picks which library runs the convolutions
(`cpu_conv_library`), for every jitted program that runs the networks.
"""

import functools
import os
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging
from jax import lax

from jaxcolor.models import winograd

Dtype = Any
NormKind = Literal["batch", "instance", "none"]
NORM_KINDS = ("batch", "instance", "none")
CONV_IMPLS = ("auto", "xla", "cpu")

# pix2pix reference `init_weights(init_type='normal', init_gain=0.02)`: conv
# weights N(0, 0.02), biases 0, batch-norm scale N(1, 0.02) and offset 0.
conv_init = nn.initializers.normal(stddev=0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def resolve_conv_impl(impl: str) -> str:
  """'xla' or 'cpu' for a `conv_impl` setting: 'auto' is 'cpu' where JAX's
  default backend is the CPU, else 'xla'."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl={impl!r}; expected one of "
                     f"{', '.join(CONV_IMPLS)}.")
  if impl == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  return impl


CPU_CONV_LIBRARIES = ("eigen", "ynnpack")

# XLA:CPU (jaxlib 0.10) hands matrix products, reductions and convolutions
# to YNNPACK. With its own convolution kernels (Eigen's) instead, every
# config's step but the smallest DLA one ran faster, several by a quarter to
# a half (docs/benchmarks.md, "Fifth round"). The option lists the library
# fusions kept: every default one but convolutions.
_YNN_FUSIONS_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_WITHOUT_YNN_CONVOLUTIONS = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                             "LIBRARY_FUSION_TYPE_REDUCE")


def compiler_options(config) -> dict[str, str] | None:
  """XLA options for the programs that run `config`'s networks (`jax.jit`'s
  `compiler_options`): on the CPU backend with `config.cpu_conv_library`
  'eigen' (the default), convolutions in XLA's own kernels instead of
  YNNPACK's; None (XLA's defaults) on GPU and TPU, with 'ynnpack', or where
  the user's XLA_FLAGS set the same option (theirs wins)."""
  library = config.get("cpu_conv_library", "eigen")
  if library not in CPU_CONV_LIBRARIES:
    raise ValueError(f"cpu_conv_library={library!r}; expected one of "
                     f"{', '.join(CPU_CONV_LIBRARIES)}.")
  if (library == "ynnpack" or jax.default_backend() != "cpu"
      or _YNN_FUSIONS_OPTION in os.environ.get("XLA_FLAGS", "")
      or not _option_supported()):
    return None
  return {_YNN_FUSIONS_OPTION: _WITHOUT_YNN_CONVOLUTIONS}


@functools.cache
def _option_supported() -> bool:
  """Whether this jaxlib's XLA knows the option's values (it is
  experimental: a later XLA may rename them); if not, XLA's defaults are
  kept, with a warning."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={
        _YNN_FUSIONS_OPTION: _WITHOUT_YNN_CONVOLUTIONS}).lower(
            jnp.zeros(())).compile()
  except Exception as error:  # noqa: BLE001 - any refusal means: leave it.
    logging.warning("This XLA refuses %s=%s (%s); convolutions stay with "
                    "its default library.", _YNN_FUSIONS_OPTION,
                    _WITHOUT_YNN_CONVOLUTIONS, str(error).splitlines()[0])
    return False
  return True


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
# On XLA:CPU a stride-2 convolution's forward pass and its weight gradient
# are fast, and so is a stride-1 convolution; an lhs-dilated convolution (the
# input gradient of a stride-2 convolution, the forward pass of
# `lax.conv_transpose`) is several times slower, and the weight gradient of a
# stride-1 convolution whose window is the whole image (a phase
# convolution's) slower again. And when a convolution's kernel covers more
# positions than its input (the innermost U-Net levels: 2 x 2 inputs, 4 x 4
# kernels), XLA swaps its operands into a far slower form. The timings are in
# docs/benchmarks.md.
# The two functions below compute the PyTorch semantics of Conv2d(k, stride=2,
# padding=p) and ConvTranspose2d(k, stride=2, padding=p) and choose, for each
# pass, the fast form of the same sums, using that each is the other's input
# gradient:
#
#   strided conv     forward: strided conv         (patch product if small)
#                    input gradient: phase convolutions (transposed conv of g)
#                    weight gradient: strided conv's own (patch product if small)
#   transposed conv  forward: phase convolutions   (tap product if few outputs)
#                    input gradient: strided conv of g
#                    weight gradient: x times g's patches (the adjoint
#                                     strided conv's, with x as cotangent)
#
# Layers of 4 x 4, padding 1, with at least 16 x 16 strided outputs and 32
# channels on both sides (`_winograd_stride_2`) take Winograd's forms of
# the same three passes instead (winograd.strided and its gradients).
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
  _, height, width, _ = x.shape
  if height == width == 1:
    # Output (r, c) reads only tap (r + p, c + p) of the one input pixel: a
    # matrix product (as convolutions XLA would swap the operands, slowly).
    return jnp.einsum("bi,hwio->bhwo", x[:, 0, 0],
                      kernel[padding:padding + 2, padding:padding + 2])
  if kernel.shape[-1] <= _FEW_OUTPUTS or height * width < k * k:
    return _tap_products(x, kernel, padding)

  def phase(row_phase, col_phase):
    row_taps, row_lo, row_hi = _phase_taps(k, padding, row_phase)
    col_taps, col_lo, col_hi = _phase_taps(k, padding, col_phase)
    sub_kernel = _taps(_taps(kernel, row_taps, 0), col_taps, 1)
    return lax.conv_general_dilated(
        x, sub_kernel, window_strides=(1, 1),
        padding=((row_lo, row_hi), (col_lo, col_hi)),
        dimension_numbers=_DIMENSIONS)
  return _interleaved(phase)


def _taps(kernel: jax.Array, taps: list[int], axis: int) -> jax.Array:
  """`kernel`'s taps `taps` along `axis`, as static slices: indexing with an
  array would be a gather that XLA:CPU runs at every step."""
  return jnp.concatenate(
      [lax.slice_in_dim(kernel, t, t + 1, axis=axis) for t in taps], axis=axis)


def _interleaved(phase) -> jax.Array:
  """[B, 2H, 2W, O] whose pixel (2m + r, 2n + c) is pixel (m, n) of
  `phase(r, c)` [B, H, W, O]."""
  rows = [jnp.stack([phase(r, c) for c in (0, 1)], axis=3)  # [B, H, W, 2, O]
          for r in (0, 1)]
  y = jnp.stack(rows, axis=2)                                # [B, H, 2, W, 2, O]
  batch, height, _, width, _, features = y.shape
  return y.reshape(batch, 2 * height, 2 * width, features)


# Up to this many output channels a transposed convolution's forward pass
# (and a strided convolution's input gradient) is one matrix product
# (`_tap_products`): XLA:CPU runs a convolution with 2 outputs (every
# generator's last layer, ab) an order of magnitude slower than that
# product, and a phase convolution with 64 outputs on one thread where the
# product takes both; from 128 outputs the convolutions win
# (docs/benchmarks.md, "Third round").
_FEW_OUTPUTS = 64


def _tap_products(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """`_phase_convolutions` as one matrix product and sums of shifted slices.

  Every input pixel times every tap ([B, H, W, I] x [I, k * k * O]: the
  transposed convolution's multiply-adds, none on padding), then output
  phase (r, c) sums, over its taps, the products shifted by the tap's input
  offset (`_phase_taps`).
  """
  k, _, channels, features = kernel.shape
  batch, height, width, _ = x.shape
  products = jnp.einsum("bhwi,iq->bhwq", x, kernel.transpose(2, 0, 1, 3)
                        .reshape(channels, k * k * features))
  products = products.reshape(batch, height, width, k, k, features)

  def phase(row_phase, col_phase):
    row_taps, row_lo, _ = _phase_taps(k, padding, row_phase)
    col_taps, col_lo, _ = _phase_taps(k, padding, col_phase)
    total = 0
    for i, row_tap in enumerate(row_taps):
      for j, col_tap in enumerate(col_taps):
        # The i-th tap (by input offset) reads input m + i - lo.
        total = total + _shifted(products[:, :, :, row_tap, col_tap],
                                 i - row_lo, j - col_lo)
    return total
  return _interleaved(phase)


def _shifted(x: jax.Array, rows: int, cols: int) -> jax.Array:
  """y[:, m, n] = x[:, m + rows, n + cols], zero outside x: a slice and a
  pad, which XLA fuses into the sum that reads it (padding all the
  products first would copy them, 16 x the output, once more)."""
  height, width = x.shape[1:3]
  if abs(rows) >= height or abs(cols) >= width:
    return jnp.zeros_like(x)  # Every read falls outside x.

  def bounds(shift, size):
    return max(0, shift), min(size, size + shift), (max(0, -shift),
                                                    max(0, shift), 0)
  top, bottom, row_pad = bounds(rows, height)
  left, right, col_pad = bounds(cols, width)
  window = x[:, top:bottom, left:right]
  zero = jnp.zeros((), x.dtype)
  return lax.pad(window, zero, ((0, 0, 0), row_pad, col_pad, (0, 0, 0)))


def _strided(x: jax.Array, kernel: jax.Array, pads: tuple[int, int]) -> jax.Array:
  """`lax` stride-2 convolution, padding `pads` (low, high) on both axes."""
  return lax.conv_general_dilated(x, kernel, window_strides=(2, 2),
                                  padding=(pads, pads),
                                  dimension_numbers=_DIMENSIONS)


def _strided_forward(x: jax.Array, kernel: jax.Array,
                     pads: tuple[int, int]) -> jax.Array:
  """Stride-2 convolution; a matrix product over the input's patches when
  the output is small (at most `_SMALL_OUTPUT` positions) or the input has
  few channels (at most `_FEW_INPUTS`), where XLA:CPU's convolutions are
  slower (docs/benchmarks.md), or swap the operands when the kernel covers
  more positions than the input."""
  k = kernel.shape[0]
  batch, height, width, channels = x.shape
  low, high = pads
  rows, cols = _strided_output_size(x.shape, k, pads)
  if rows == cols == 1 and low + max(height, width) <= k:
    # One output pixel: input (h, w) meets tap (h + low, w + low), a matrix
    # product (the innermost U-Net level, 2 x 2 -> 1 x 1).
    taps = kernel[low:low + height, low:low + width]
    return jnp.einsum("bhwi,hwio->bo", x, taps)[:, None, None, :]
  if rows * cols > _SMALL_OUTPUT and channels > _FEW_INPUTS:
    return _strided(x, kernel, pads)
  return jnp.einsum("bhwq,qo->bhwo", _patches(x, k, pads),
                    kernel.reshape(k * k * channels, kernel.shape[-1]))


# Stride-2 convolutions with at most this many output positions (8 x 8) run
# their forward pass as a matrix product over patches, and with at most
# `_SMALL_WEIGHT_GRADIENT` (4 x 4) their weight gradient too. Measured on one
# core at batch 16 (docs/benchmarks.md): forward 16 x 16 x 256 -> 8 x 8 x 512
# 24 ms against 39 ms, 4 x 4 x 512 -> 2 x 2 x 1024 9.5 against 31; weight
# gradient at 8 x 8 x 512 -> 4 x 4 x 512 17 against 33 ms but at 16 x 16 x
# 256 -> 8 x 8 x 512 40 against 24 ms; from 16 x 16 outputs on the
# convolutions are faster in both. With at most `_FEW_INPUTS` input channels
# (the photo's L*, the discriminator's L*a*b*) both passes take the patch
# product at every size: the patches are small (16 I per position), and
# XLA:CPU's own convolution kernels run such inputs slower than the product
# (docs/benchmarks.md, "Fifth round").
_SMALL_OUTPUT = 64
_SMALL_WEIGHT_GRADIENT = 16
_FEW_INPUTS = 4


def _strided_output_size(shape: tuple[int, ...], k: int,
                         pads: tuple[int, int]) -> tuple[int, int]:
  _, height, width, _ = shape
  return ((height + sum(pads) - k) // 2 + 1, (width + sum(pads) - k) // 2 + 1)


def _patches(x: jax.Array, k: int, pads: tuple[int, int]) -> jax.Array:
  """The k x k windows of a stride-2 convolution: [B, R, C, k * k * I], taps
  in the kernel's (row, column, channel) order."""
  rows, cols = _strided_output_size(x.shape, k, pads)
  x = jnp.pad(x, ((0, 0), pads, pads, (0, 0)))
  taps = [x[:, a:a + 2 * rows - 1:2, b:b + 2 * cols - 1:2]
          for a in range(k) for b in range(k)]
  return jnp.concatenate(taps, axis=-1)


def _strided_weight_gradient(x: jax.Array, grad: jax.Array, k: int,
                             pads: tuple[int, int]) -> jax.Array:
  """d/dkernel of `_strided(x, kernel, pads)` pulled back from `grad`."""
  rows, cols = grad.shape[1:3]
  if rows * cols <= _SMALL_WEIGHT_GRADIENT or x.shape[-1] <= _FEW_INPUTS:
    flat = jnp.einsum("bhwq,bhwo->qo", _patches(x, k, pads), grad)
    return flat.reshape(k, k, x.shape[-1], grad.shape[-1])
  kernel = jax.ShapeDtypeStruct((k, k, x.shape[-1], grad.shape[-1]), x.dtype)
  return jax.linear_transpose(lambda w: _strided(x, w, pads), kernel)(grad)[0]


def _adjoint_weight_gradient(grad: jax.Array, x: jax.Array, k: int,
                             pads: tuple[int, int]) -> jax.Array:
  """The weight gradient of a transposed convolution of `x` [B, H, W, I]
  pulled back from `grad` [B, 2H, 2W, O]: that of its adjoint, the strided
  convolution of `grad`, with `x` as the cotangent, laid out [k, k, I, O].

  One matrix product of x with `grad`'s patches, [I, k * k * O], so that O
  stays the fastest-varying axis on the way to the kernel's layout: the
  optimizer's updates read the gradient with that transpose fused in,
  cheap when it moves whole rows of O, slow when it moves single elements,
  as the convolution form's [O, k, k, I] needs. Timed with the updates
  counted, the product is the faster form for these networks
  (docs/benchmarks.md, "Fourth round"); the convolution form is kept for
  patches over `_MAX_PATCHES` elements, to bound the memory.
  """
  patches_size = (grad.shape[0] * x.shape[1] * x.shape[2] * k * k
                  * grad.shape[-1])
  if patches_size > _MAX_PATCHES:
    return _swap_io(_strided_weight_gradient(grad, x, k, pads))
  patches = _patches(grad, k, pads)
  inputs, outputs = x.shape[-1], grad.shape[-1]
  if k * k * outputs < inputs:
    # XLA:CPU transposes the product's first operand (the pixels are its
    # rows); here the patches are the smaller one (few outputs, as in every
    # generator's last layer), and the element-wise swap the product's
    # [k * k * O, I] then needs is of a small kernel.
    flat = jnp.einsum("bhwq,bhwi->qi", patches, x)
    return _swap_io(flat.reshape(k, k, outputs, inputs))
  flat = jnp.einsum("bhwi,bhwq->iq", x, patches)
  return flat.reshape(inputs, k, k, outputs).transpose(1, 2, 0, 3)


# The largest patch tensor (elements; 256 MiB in float32) that
# `_adjoint_weight_gradient` builds: a transposed convolution from 64 x 64 x
# 256 to 128 x 128 x 64 at batch 16 (pix2pix at 256 px).
_MAX_PATCHES = 1 << 26


def _transposed_pads(kernel_size: int, padding: int,
                     output_padding: int) -> tuple[int, int]:
  """Padding of the stride-2 convolution adjoint to a transposed one."""
  del kernel_size
  return padding, padding - output_padding


# Winograd's minimal filtering (jaxcolor/models/winograd.py) on the CPU:
# 4 x 4 layers with at least `_WINOGRAD_MIN_CHANNELS` input and output
# channels take it in all three passes: stride-1 ones (the PatchGAN's
# penultimate layer) as F(3 x 3, 4 x 4), stride-2 and transposed ones
# (padding 1) as F(3 x 3, 2 x 2) on the space-to-depth input when the
# strided side has at least `_WINOGRAD_MIN_GRID` x `_WINOGRAD_MIN_GRID`
# outputs. Below these sizes the transforms cost more than the products
# they save; a last layer with one or two outputs stays a convolution or a
# product. The thresholds are whole-step measurements (docs/benchmarks.md,
# "Sixth round"): grids from 8 were no faster, from 32 slower, and
# channels from 64 slower.
_WINOGRAD_MIN_CHANNELS = 32
_WINOGRAD_MIN_GRID = 16


def _winograd_stride_2(kernel: jax.Array, padding: int, grid: int) -> bool:
  """Whether a stride-2 layer takes the Winograd form: `grid` is the side
  of the strided convolution's output (a transposed layer's input). Only
  in float32: in bfloat16 the transforms' rounding would cost more than a
  direct convolution's."""
  k, _, inputs, outputs = kernel.shape
  return (k == 4 and padding == 1 and grid >= _WINOGRAD_MIN_GRID
          and min(inputs, outputs) >= _WINOGRAD_MIN_CHANNELS
          and kernel.dtype == jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_2x(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """PyTorch `Conv2d(k, stride=2, padding)`: [B, H, W, I] -> [B, H/2, W/2, O].

  Needs kernel_size - 2 * padding == 2 and even H, W (exact halving), so
  that the input gradient is the `conv_transpose_2x` of the output gradient.
  """
  if _winograd_stride_2(kernel, padding, min(x.shape[1:3]) // 2):
    return winograd.strided(x, kernel)
  return _strided_forward(x, kernel, (padding, padding))


def _conv_2x_forward(x, kernel, padding):
  return conv_2x(x, kernel, padding), (x, kernel)


def _conv_2x_backward(padding, residuals, grad):
  x, kernel = residuals
  if _winograd_stride_2(kernel, padding, min(x.shape[1:3]) // 2):
    return (winograd.strided_input_gradient(grad, kernel).astype(x.dtype),
            winograd.strided_weight_gradient(x, grad).astype(kernel.dtype))
  grad_x = _phase_convolutions(grad, _swap_io(kernel), padding)
  grad_kernel = _strided_weight_gradient(x, grad, kernel.shape[0],
                                         (padding, padding))
  return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


conv_2x.defvjp(_conv_2x_forward, _conv_2x_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_transpose_2x(x: jax.Array, kernel: jax.Array, padding: int,
                      output_padding: int) -> jax.Array:
  """PyTorch `ConvTranspose2d(k, stride=2, padding, output_padding)` with
  k - 2 * padding + output_padding == 2: [B, H, W, I] -> [B, 2H, 2W, O]."""
  del output_padding  # Only the output size depends on it: exactly 2H here.
  if _winograd_stride_2(kernel, padding, min(x.shape[1:3])):
    return winograd.strided_input_gradient(x, _swap_io(kernel))
  return _phase_convolutions(x, kernel, padding)


def _conv_transpose_2x_forward(x, kernel, padding, output_padding):
  return conv_transpose_2x(x, kernel, padding, output_padding), (x, kernel)


def _conv_transpose_2x_backward(padding, output_padding, residuals, grad):
  x, kernel = residuals
  if _winograd_stride_2(kernel, padding, min(x.shape[1:3])):
    grad_x = winograd.strided(grad, _swap_io(kernel))
    grad_kernel = _swap_io(winograd.strided_weight_gradient(grad, x))
    return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)
  pads = _transposed_pads(kernel.shape[0], padding, output_padding)
  grad_x = _strided_forward(grad, _swap_io(kernel), pads)
  grad_kernel = _adjoint_weight_gradient(grad, x, kernel.shape[0], pads)
  return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


conv_transpose_2x.defvjp(_conv_transpose_2x_forward, _conv_transpose_2x_backward)


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
  impl: str = "auto"


class Conv2x(_SquareConv):
  """A stride-2 convolution that halves height and width.

  The same function and parameters as `nn.Conv(features, (k, k), strides=2,
  padding=padding)` (PyTorch's `Conv2d(in, out, k, stride=2, padding)`), with
  the passes computed in XLA:CPU's fast forms (`conv_2x`). Forward values are
  those of `nn.Conv`, except for outputs of at most 8 x 8 and inputs of at
  most 4 channels, which take the patch product (the same sums in another
  order, within 1e-5). With
  `impl='xla'` (see `resolve_conv_impl`) it is XLA's strided convolution.

  Attributes:
    features: output channels.
    kernel_size: square kernel side (4 in pix2pix and DCGAN).
    padding: zero padding on every side (1 in pix2pix); the input must be
      exactly halved: kernel_size - 2 * padding == 2, even height and width.
  impl: 'auto', 'xla' or 'cpu' (module docstring).
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
    if resolve_conv_impl(self.impl) == "xla":
      return _kernel_bias_apply(self, x, lambda x, w: lax.conv_general_dilated(
          x, w, (2, 2), ((p, p), (p, p)), dimension_numbers=_DIMENSIONS))
    return _kernel_bias_apply(self, x, lambda x, w: conv_2x(x, w, p))


class ConvTranspose2x(_SquareConv):
  """A stride-2 transposed convolution that doubles height and width.

  The same function and parameters as `torch.nn.ConvTranspose2d(in, out,
  kernel_size, stride=2, padding, output_padding)` with the kernel stored as
  `kernel[kh, kw, in, out]` in PyTorch's tap order (`weight.permute(2, 3, 0, 1)`
  converts a PyTorch weight). Its forward pass is four stride-1 convolutions,
  one per output phase (row parity x column parity), interleaved (with at
  most `_FEW_OUTPUTS` outputs, one matrix product and shifted sums); its
  gradients are those of the adjoint strided convolution (`conv_transpose_2x`).
  XLA:CPU takes the weight gradient of `lax.conv_transpose` (an lhs-dilated
  convolution) far slower than its forward (docs/benchmarks.md). With
  `impl='xla'` it is that lhs-dilated convolution, which GPUs and TPUs run
  natively.

  Attributes:
    features: output channels.
    kernel_size: square kernel side (4 in pix2pix).
    padding: PyTorch's `padding` (1 in pix2pix).
    output_padding: PyTorch's `output_padding`; the output must be exactly
      twice the input, i.e. kernel_size - 2 * padding + output_padding == 2.
    impl: 'auto', 'xla' or 'cpu' (module docstring).
  """
  output_padding: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.padding
    if k - 2 * p + self.output_padding != 2:
      raise ValueError(
          f"ConvTranspose2x needs kernel_size - 2*padding + output_padding == 2 "
          f"to double the size; got kernel_size={k}, padding={p}, "
          f"output_padding={self.output_padding}.")
    if resolve_conv_impl(self.impl) == "xla":
      return _kernel_bias_apply(self, x, lambda x, w: _dilated_transpose(
          x, w, p, self.output_padding))
    return _kernel_bias_apply(
        self, x, lambda x, w: conv_transpose_2x(x, w, p, self.output_padding))


class Conv1x(_SquareConv):
  """A stride-1 convolution, PyTorch's `Conv2d(in, out, k, padding)`.

  The same function and parameters as `nn.Conv(features, (k, k),
  padding=((p, p), (p, p)))`. With `impl` resolving to 'cpu', a float32
  4 x 4 kernel between at least `_WINOGRAD_MIN_CHANNELS` channels takes
  Winograd's minimal filtering (`winograd.correlate`: a quarter of the
  products; the same sums rounded differently, to about 1e-4 of the
  outputs' scale);
  every other case, and 'xla', is `lax.conv_general_dilated`.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    padding: zero padding on every side, at most kernel_size - 1.
    impl: 'auto', 'xla' or 'cpu' (module docstring).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.padding
    if not 0 <= p < k:
      raise ValueError(f"Conv1x needs 0 <= padding < kernel_size; got "
                       f"kernel_size={k}, padding={p}.")
    if (resolve_conv_impl(self.impl) == "cpu" and k == 4
        and min(x.shape[-1], self.features) >= _WINOGRAD_MIN_CHANNELS
        and min(x.shape[1:3]) + 2 * p >= k and self.dtype == jnp.float32):
      return _kernel_bias_apply(self, x, lambda x, w: winograd.correlate(
          x, w, p))
    return _kernel_bias_apply(self, x, lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), ((p, p), (p, p)), dimension_numbers=_DIMENSIONS))


def _dilated_transpose(x: jax.Array, kernel: jax.Array, padding: int,
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
      lhs_dilation=(2, 2), dimension_numbers=_DIMENSIONS)


def _kernel_bias_apply(module: nn.Module, x: jax.Array, convolve) -> jax.Array:
  """`convolve(x, kernel) + bias` in `module.dtype`, declaring the module's
  parameters: `kernel` [k, k, in, features] and, with `use_bias`, `bias`
  (zeros). Shared by `Conv2x` and `ConvTranspose2x`, whose parameters are
  laid out alike."""
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
