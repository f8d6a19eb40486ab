"""The pieces the CPU forms are built from: stride-1 convolutions and matrix
products that compute stride-2 and transposed stride-2 convolutions.

Each function is one way of computing a pass, with no choice of its own;
`forms.CpuConvForms` decides which runs where. Kernels are HWIO in
PyTorch's tap order; `swap_io` turns a kernel into that of the adjoint
(input and output channels exchanged).
"""

import jax
import jax.numpy as jnp
from jax import lax

from jaxcolor.core.choices import CONV_DIMENSIONS



def swap_io(kernel: jax.Array) -> jax.Array:
  return jnp.swapaxes(kernel, 2, 3)


def phase_taps(kernel_size: int, padding: int,
               phase: int) -> tuple[list[int], int, int]:
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


def _taps(kernel: jax.Array, taps: list[int], axis: int) -> jax.Array:
  """`kernel`'s taps `taps` along `axis`, as static slices: indexing with an
  array would be a gather that XLA:CPU runs at every step."""
  return jnp.concatenate(
      [lax.slice_in_dim(kernel, t, t + 1, axis=axis) for t in taps], axis=axis)


def interleaved(phase) -> jax.Array:
  """[B, 2H, 2W, O] whose pixel (2m + r, 2n + c) is pixel (m, n) of
  `phase(r, c)` [B, H, W, O]."""
  rows = [jnp.stack([phase(r, c) for c in (0, 1)], axis=3)  # [B, H, W, 2, O]
          for r in (0, 1)]
  y = jnp.stack(rows, axis=2)  # [B, H, 2, W, 2, O]
  batch, height, _, width, _, features = y.shape
  return y.reshape(batch, 2 * height, 2 * width, features)


def phase_convolutions(x: jax.Array, kernel: jax.Array,
                       padding: int) -> jax.Array:
  """Transposed stride-2 convolution as four stride-1 convolutions, one per
  output phase (row parity x column parity), interleaved: [B, H, W, I] ->
  [B, 2H, 2W, O]. No dilation anywhere: XLA:CPU runs an lhs-dilated
  convolution in a slow form."""
  k = kernel.shape[0]

  def phase(row_phase, col_phase):
    row_taps, row_lo, row_hi = phase_taps(k, padding, row_phase)
    col_taps, col_lo, col_hi = phase_taps(k, padding, col_phase)
    sub_kernel = _taps(_taps(kernel, row_taps, 0), col_taps, 1)
    return lax.conv_general_dilated(
        x, sub_kernel, window_strides=(1, 1),
        padding=((row_lo, row_hi), (col_lo, col_hi)),
        dimension_numbers=CONV_DIMENSIONS)
  return interleaved(phase)


def one_pixel_transposed(x: jax.Array, kernel: jax.Array,
                         padding: int) -> jax.Array:
  """A transposed stride-2 convolution of a 1 x 1 input: output (r, c) reads
  only tap (r + p, c + p) of the one pixel, a matrix product (as
  convolutions, XLA would swap the operands into a slow form)."""
  return jnp.einsum("bi,hwio->bhwo", x[:, 0, 0],
                    kernel[padding:padding + 2, padding:padding + 2])


def tap_products(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """`phase_convolutions` as one matrix product and sums of shifted slices.

  Every input pixel times every tap ([B, H, W, I] x [I, k * k * O]: the
  transposed convolution's multiply-adds, none on padding), then output
  phase (r, c) sums, over its taps, the products shifted by the tap's input
  offset (`phase_taps`).
  """
  k, _, channels, features = kernel.shape
  batch, height, width, _ = x.shape
  products = jnp.einsum("bhwi,iq->bhwq", x, kernel.transpose(2, 0, 1, 3)
                        .reshape(channels, k * k * features))
  products = products.reshape(batch, height, width, k, k, features)

  def phase(row_phase, col_phase):
    row_taps, row_lo, _ = phase_taps(k, padding, row_phase)
    col_taps, col_lo, _ = phase_taps(k, padding, col_phase)
    total = 0
    for i, row_tap in enumerate(row_taps):
      for j, col_tap in enumerate(col_taps):
        # The i-th tap (by input offset) reads input m + i - lo.
        total = total + _shifted(products[:, :, :, row_tap, col_tap],
                                 i - row_lo, j - col_lo)
    return total
  return interleaved(phase)


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


def strided(x: jax.Array, kernel: jax.Array,
            pads: tuple[int, int]) -> jax.Array:
  """`lax` stride-2 convolution, padding `pads` (low, high) on both axes."""
  return lax.conv_general_dilated(x, kernel, window_strides=(2, 2),
                                  padding=(pads, pads),
                                  dimension_numbers=CONV_DIMENSIONS)


def strided_output_size(shape: tuple[int, ...], k: int,
                        pads: tuple[int, int]) -> tuple[int, int]:
  _, height, width, _ = shape
  return ((height + sum(pads) - k) // 2 + 1, (width + sum(pads) - k) // 2 + 1)


def patches(x: jax.Array, k: int, pads: tuple[int, int]) -> jax.Array:
  """The k x k windows of a stride-2 convolution: [B, R, C, k * k * I], taps
  in the kernel's (row, column, channel) order."""
  rows, cols = strided_output_size(x.shape, k, pads)
  x = jnp.pad(x, ((0, 0), pads, pads, (0, 0)))
  windows = [x[:, a:a + 2 * rows - 1:2, b:b + 2 * cols - 1:2]
             for a in range(k) for b in range(k)]
  return jnp.concatenate(windows, axis=-1)


def patch_product(x: jax.Array, kernel: jax.Array,
                  pads: tuple[int, int]) -> jax.Array:
  """`strided` as a matrix product over the input's patches."""
  k, _, channels, features = kernel.shape
  return jnp.einsum("bhwq,qo->bhwo", patches(x, k, pads),
                    kernel.reshape(k * k * channels, features))


def one_pixel_strided(x: jax.Array, kernel: jax.Array, low: int) -> jax.Array:
  """`strided` with one output pixel whose window holds the whole input
  (the innermost U-Net level, 2 x 2 -> 1 x 1): input (h, w) meets tap
  (h + low, w + low), a matrix product."""
  height, width = x.shape[1:3]
  taps = kernel[low:low + height, low:low + width]
  return jnp.einsum("bhwi,hwio->bo", x, taps)[:, None, None, :]


def patch_weight_gradient(x: jax.Array, grad: jax.Array, k: int,
                          pads: tuple[int, int]) -> jax.Array:
  """d/dkernel of `strided(x, kernel, pads)` pulled back from `grad`, as a
  matrix product of `x`'s patches with `grad`: [k, k, I, O]."""
  flat = jnp.einsum("bhwq,bhwo->qo", patches(x, k, pads), grad)
  return flat.reshape(k, k, x.shape[-1], grad.shape[-1])


def conv_weight_gradient(x: jax.Array, grad: jax.Array, k: int,
                         pads: tuple[int, int]) -> jax.Array:
  """The same gradient as `patch_weight_gradient`, as XLA's own weight
  gradient of the strided convolution."""
  kernel = jax.ShapeDtypeStruct((k, k, x.shape[-1], grad.shape[-1]), x.dtype)
  return jax.linear_transpose(lambda w: strided(x, w, pads), kernel)(grad)[0]


def adjoint_patch_weight_gradient(grad: jax.Array, x: jax.Array, k: int,
                                  pads: tuple[int, int]) -> jax.Array:
  """The weight gradient of a transposed convolution of `x` [B, H, W, I]
  pulled back from `grad` [B, 2H, 2W, O]: that of its adjoint, the strided
  convolution of `grad`, with `x` as the cotangent, laid out [k, k, I, O].

  One matrix product of x with `grad`'s patches, [I, k * k * O], so that O
  stays the fastest-varying axis on the way to the kernel's layout: the
  optimizer's updates read the gradient with that transpose fused in,
  cheap when it moves whole rows of O, slow when it moves single elements,
  as the convolution form's [O, k, k, I] needs.
  """
  grad_patches = patches(grad, k, pads)
  inputs, outputs = x.shape[-1], grad.shape[-1]
  if k * k * outputs < inputs:
    # XLA:CPU transposes the product's first operand (the pixels are its
    # rows); here the patches are the smaller one (few outputs, as in every
    # generator's last layer), and the element-wise swap the product's
    # [k * k * O, I] then needs is of a small kernel.
    flat = jnp.einsum("bhwq,bhwi->qi", grad_patches, x)
    return swap_io(flat.reshape(k, k, outputs, inputs))
  flat = jnp.einsum("bhwi,bhwq->iq", x, grad_patches)
  return flat.reshape(inputs, k, k, outputs).transpose(1, 2, 0, 3)


def transposed_pads(padding: int, output_padding: int) -> tuple[int, int]:
  """Padding of the stride-2 convolution adjoint to a transposed one."""
  return padding, padding - output_padding
