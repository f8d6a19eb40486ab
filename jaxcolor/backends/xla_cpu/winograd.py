"""Winograd's minimal filtering: 4 x 4 convolutions with fewer products.

A stride-1 correlation computes each output tile of m x m pixels from an
(m + r - 1)-square input tile; Winograd's F(m x m, r x r) (Lavin and Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016; the Toom-Cook
construction) does it with (m + r - 1)^2 multiplications per tile and
channel pair instead of m^2 r^2:

    Y = A^T [ (G g G^T) . (B^T d B) ] A

for a filter g (r x r), an input tile d and the element-wise product `.`.
Summed over input channels, the element-wise products become one matrix
product per tile position: ([tiles, I] x [I, O]) for each of the
(m + r - 1)^2 positions, which is where the time goes.

Used by the CPU forms only (forms.py: `CpuConvForms.conv_stride1`,
`conv_stride2`, `conv_transpose_stride2`, above its size thresholds). For
the 4 x 4 stride-1 layer of the 70 x 70 PatchGAN (256 -> 512 channels, a
large share of a pix2pix step's FLOPs), F(3 x 3, 4 x 4) needs 4 products
per output pixel and channel pair instead of 16; a stride-2 4 x 4 layer is a
2 x 2 correlation of the space-to-depth input, where F(3 x 3, 2 x 2) needs
16 products per 9 outputs instead of 36. The transforms are written as
element-wise sums, which XLA fuses, around one matrix product per tile
position, the form XLA:CPU runs fastest (docs/benchmarks.md). GPUs and TPUs
keep their own convolutions, which choose their algorithms themselves.

Numerics: the same sums, rounded differently. F(3 x 3, 2 x 2) interpolates
at 0 and +-1 only, and stays within about 2e-5 of a direct float32
convolution (relative to the outputs' scale); F(3 x 3, 4 x 4) also uses
+-2, and differs by up to about 1e-4, as cuDNN's Winograd algorithms do on
GPUs. tests/test_backends.py bounds both.
"""

import functools
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# The Toom-Cook interpolation points, in order of use: the small ones first
# keep the transforms' entries, and so the rounding, small.
_POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2),
           Fraction(1, 2), Fraction(-1, 2))


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
  """Exact inverse by Gauss-Jordan elimination over the rationals."""
  n = len(matrix)
  rows = [row[:] + [Fraction(int(i == j)) for j in range(n)]
          for i, row in enumerate(matrix)]
  for col in range(n):
    pivot = next(i for i in range(col, n) if rows[i][col] != 0)
    rows[col], rows[pivot] = rows[pivot], rows[col]
    rows[col] = [v / rows[col][col] for v in rows[col]]
    for i in range(n):
      if i != col and rows[i][col] != 0:
        factor = rows[i][col]
        rows[i] = [a - factor * b for a, b in zip(rows[i], rows[col])]
  return [row[n:] for row in rows]


@functools.cache
def transforms(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(A^T [m, a], G [a, r], B^T [a, a]) of F(m, r), a = m + r - 1.

  Polynomial multiplication evaluated at a - 1 points and infinity: with
  V_n the [a, n] matrix that evaluates a polynomial of n coefficients there
  (the row for infinity takes the leading coefficient), the linear
  convolution c = g * x is V_a^{-1} ((V_r g) . (V_m x)); the correlation
  y_i = sum_k d_{i + k} g_k is its transpose in x, so A^T = V_m^T, G = V_r
  and B^T = V_a^{-T}. Computed exactly, rounded to float64 once.
  """
  a = m + r - 1
  if not 1 <= a - 1 <= len(_POINTS):
    raise ValueError(f"F({m}, {r}) needs {a - 1} interpolation points; "
                     f"at most {len(_POINTS)} are defined.")
  points = _POINTS[:a - 1]

  def vandermonde(n):
    rows = [[p ** j for j in range(n)] for p in points]
    return rows + [[Fraction(0)] * (n - 1) + [Fraction(1)]]
  v_m, v_r, v_a = vandermonde(m), vandermonde(r), vandermonde(a)
  def to_array(rows):
    return np.array([[float(v) for v in row] for row in rows])
  a_t = to_array(v_m).T
  g = to_array(v_r)
  b_t = to_array(_inverse(v_a)).T
  return a_t, g, b_t


def _combine(matrix: np.ndarray, parts: list[jax.Array]) -> list[jax.Array]:
  """[sum_j matrix[i, j] * parts[j] for each row i], skipping zeros, so
  that XLA fuses each into one element-wise loop."""
  out = []
  for row in matrix:
    terms = [float(c) * p if c != 1 else p for c, p in zip(row, parts) if c]
    out.append(functools.reduce(jnp.add, terms))
  return out


def tile_for(kernel_size: int) -> int:
  """The output tile side m used for an r x r kernel: F(3, 4) for 4 x 4 and
  F(3, 2) for 2 x 2 (the stride-2 layers' form), measured fastest of m = 2,
  3, 4 on the pix2pix layers (larger tiles' transforms cost more than
  their products save, and from m = 4 the points +-2 cost accuracy);
  F(2, 3) otherwise."""
  return 3 if kernel_size in (2, 4) else 2


class _Tiling(NamedTuple):
  """How an output [batch, height, width, .] is cut into m x m tiles."""
  m: int
  r: int
  batch: int
  height: int
  width: int
  tiles_h: int
  tiles_w: int


def _tiling(x_shape, r: int, padding: tuple[int, int], m: int) -> _Tiling:
  batch, height, width, _ = x_shape
  out_h = height + sum(padding) - r + 1
  out_w = width + sum(padding) - r + 1
  return _Tiling(m, r, batch, out_h, out_w, -(-out_h // m), -(-out_w // m))


def _input_tiles(x: jax.Array, padding: tuple[int, int],
                 t: _Tiling) -> list[list[jax.Array]]:
  """B^T d B for every input tile d: [k][l] -> [tiles, I], separably (rows
  of every tile, then columns; row i of tile j is input row m j + i, a
  strided slice over all tiles at once). The input is zero-padded to whole
  tiles: the extra outputs are computed and cut off."""
  *_, b_t = (v.astype(np.float32) for v in transforms(t.m, t.r))
  a, m = t.m + t.r - 1, t.m
  low = padding[0]
  height, width = x.shape[1:3]
  x = jnp.pad(x, ((0, 0), (low, m * t.tiles_h + t.r - 1 - height - low),
                  (low, m * t.tiles_w + t.r - 1 - width - low), (0, 0)))
  rows = [x[:, i:i + m * (t.tiles_h - 1) + 1:m] for i in range(a)]
  out = []
  for row in _combine(b_t, rows):
    cols = [row[:, :, j:j + m * (t.tiles_w - 1) + 1:m] for j in range(a)]
    out.append([v.reshape(-1, x.shape[-1]) for v in _combine(b_t, cols)])
  return out


def _kernel_transform(kernel: jax.Array, m: int,
                      flipped: bool) -> list[list[jax.Array]]:
  """G g G^T for every channel pair: [k][l] -> [I, O]; with `flipped`, of
  the kernel flipped in space (its channels stay as they are)."""
  r = kernel.shape[0]
  _, g, _ = (v.astype(np.float32) for v in transforms(m, r))
  order = range(r - 1, -1, -1) if flipped else range(r)
  taps = [[kernel[i, j] for j in order] for i in order]
  by_row = [_combine(g, row) for row in taps]                  # [i][l]
  by_col = [_combine(g, [row[l] for row in by_row])
            for l in range(g.shape[0])]                        # [l][k]
  return [list(col) for col in zip(*by_col)]                   # [k][l]


def _correlate(x: jax.Array, kernel: jax.Array, padding: tuple[int, int],
               m: int, adjoint: bool = False) -> jax.Array:
  """Stride-1 correlation, NHWC x HWIO -> NHWC, zero padding `padding` (low,
  high) on both spatial axes, by F(m x m, r x r). With `adjoint`, the
  correlation with the kernel flipped in space and its channels exchanged
  (the input gradient's), read from `kernel` as it is: the products
  contract its output axis, so no transposed copy of it is made."""
  t = _tiling(x.shape, kernel.shape[0], padding, m)
  a_t, *_ = (v.astype(np.float32) for v in transforms(m, t.r))
  a = m + t.r - 1
  tiles = _input_tiles(x, padding, t)
  kernel_t = _kernel_transform(kernel, m, flipped=adjoint)
  # One matrix product per tile position: separate products, which XLA:CPU
  # runs as fast matrix products (one batched product was slower).
  contract = (((1,), (1 if adjoint else 0,)), ((), ()))
  products = [[lax.dot_general(tiles[k][l], kernel_t[k][l], contract)
               for l in range(a)] for k in range(a)]
  # A^T M A: [p][q] -> [tiles, O].
  by_column = [_combine(a_t, [products[k][l] for k in range(a)])
               for l in range(a)]                              # [l][p]
  phases = [_combine(a_t, [by_column[l][p] for l in range(a)])
            for p in range(m)]                                 # [p][q]
  # Each [B, tiles_h, tiles_w, O]; stacked to [B, tiles_h, p, tiles_w, q,
  # O], which is the output's layout: no transpose.
  features = kernel.shape[2 if adjoint else 3]
  y = jnp.stack([jnp.stack([v.reshape(t.batch, t.tiles_h, t.tiles_w, features)
                            for v in row], axis=3) for row in phases], axis=2)
  y = y.reshape(t.batch, m * t.tiles_h, m * t.tiles_w, features)
  return y[:, :t.height, :t.width]


def _weight_gradient(x: jax.Array, grad: jax.Array, r: int,
                     padding: tuple[int, int], m: int) -> jax.Array:
  """d/dkernel of `_correlate(x, kernel, padding, m)` pulled back from
  `grad`, in the transformed domain: the output gradient through A (the
  transpose of A^T . A^T), one product V^T dM per tile position, then back
  through G."""
  t = _tiling(x.shape, r, padding, m)
  a_t, g, _ = (v.astype(np.float32) for v in transforms(m, r))
  a = m + r - 1
  features = grad.shape[-1]
  grad = jnp.pad(grad, ((0, 0), (0, m * t.tiles_h - t.height),
                        (0, m * t.tiles_w - t.width), (0, 0)))
  grad = grad.reshape(t.batch, t.tiles_h, m, t.tiles_w, m, features)
  phases = [[grad[:, :, p, :, q].reshape(-1, features) for q in range(m)]
            for p in range(m)]
  by_row = [_combine(a_t.T, phases[p]) for p in range(m)]        # [p][l]
  grad_products = [_combine(a_t.T, [by_row[p][l] for p in range(m)])
                   for l in range(a)]                            # [l][k]
  tiles = _input_tiles(x, padding, t)
  grad_kernel_t = [[jnp.dot(tiles[k][l].T, grad_products[l][k])
                    for l in range(a)] for k in range(a)]        # [k][l]
  by_col = [_combine(g.T, grad_kernel_t[k]) for k in range(a)]   # [k][j]
  taps = [_combine(g.T, [by_col[k][j] for k in range(a)])
          for j in range(r)]                                     # [j][i]
  return jnp.stack([jnp.stack([taps[j][i] for j in range(r)])
                    for i in range(r)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def correlate(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)))` (NHWC,
  HWIO) by Winograd's F(m x m, r x r), m = `tile_for(r)`, in every pass.

  The input gradient is itself a stride-1 correlation (of the output
  gradient with the kernel flipped in space and its channels exchanged,
  padding r - 1 - p), so it takes the same form; the weight gradient is
  computed in the transformed domain (`_weight_gradient`). Needs
  0 <= padding <= r - 1.
  """
  return _correlate(x, kernel, (padding, padding), tile_for(kernel.shape[0]))


def _correlate_forward(x, kernel, padding):
  return correlate(x, kernel, padding), (x, kernel)


def _correlate_backward(padding, residuals, grad):
  x, kernel = residuals
  r = kernel.shape[0]
  back = r - 1 - padding
  grad_x = _correlate(grad, kernel, (back, back), tile_for(r), adjoint=True)
  grad_kernel = _weight_gradient(x, grad, r, (padding, padding), tile_for(r))
  return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


correlate.defvjp(_correlate_forward, _correlate_backward)


# -- Stride-2 4 x 4 convolutions as 2 x 2 correlations ------------------------
#
# A stride-2 convolution with a 4 x 4 kernel and padding 1 reads input rows
# 2i - 1 .. 2i + 2 for output row i: on the input padded by 1 and folded
# space-to-depth (2 x 2 pixels into 4 I channels), that is a 2 x 2 stride-1
# correlation with a [2, 2, 4 I, O] kernel, which F(3 x 3, 2 x 2) computes
# with 16 products per 9 outputs instead of 36 (a 2.25 x cut). Its input
# gradient is the adjoint correlation, folded back; its weight gradient the
# 2 x 2 one's, unfolded. The transposed convolution
# (`CpuConvForms.conv_transpose_stride2`) is the adjoint of a strided one
# and takes the same three functions with the roles exchanged.


def _fold(x: jax.Array) -> jax.Array:
  """Space-to-depth of 2 x 2 blocks: [B, 2H, 2W, C] -> [B, H, W, (p, q, C)]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def _unfold(x: jax.Array, channels: int) -> jax.Array:
  """The inverse of `_fold`."""
  b, h, w, _ = x.shape
  x = x.reshape(b, h, w, 2, 2, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, channels)


def _fold_kernel(kernel: jax.Array) -> jax.Array:
  """[4, 4, I, O] -> [2, 2, (p, q, I), O]: tap (2a + p, 2b + q) of the
  stride-2 kernel is tap (a, b) of the 2 x 2 one, on input phase (p, q)."""
  _, _, i, o = kernel.shape
  kernel = kernel.reshape(2, 2, 2, 2, i, o).transpose(0, 2, 1, 3, 4, 5)
  return kernel.reshape(2, 2, 4 * i, o)


def _unfold_kernel(kernel: jax.Array) -> jax.Array:
  """The inverse of `_fold_kernel`."""
  _, _, i4, o = kernel.shape
  kernel = kernel.reshape(2, 2, 2, 2, i4 // 4, o).transpose(0, 2, 1, 3, 4, 5)
  return kernel.reshape(4, 4, i4 // 4, o)


def _padded_fold(x: jax.Array) -> jax.Array:
  return _fold(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))))


def strided(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """PyTorch's `Conv2d(4, stride=2, padding=1)`: [B, H, W, I] (H, W even)
  x [4, 4, I, O] -> [B, H / 2, W / 2, O]."""
  return _correlate(_padded_fold(x), _fold_kernel(kernel), (0, 0),
                    tile_for(2))


def strided_input_gradient(grad: jax.Array, kernel: jax.Array) -> jax.Array:
  """The input gradient of `strided` pulled back from `grad` [B, H, W, O]:
  [B, 2H, 2W, I]; also PyTorch's `ConvTranspose2d(4, stride=2, padding=1)`
  of `grad` with the kernel's channels exchanged."""
  folded = _correlate(grad, _fold_kernel(kernel), (1, 1), tile_for(2),
                      adjoint=True)
  return _unfold(folded, kernel.shape[2])[:, 1:-1, 1:-1]


def strided_weight_gradient(x: jax.Array, grad: jax.Array) -> jax.Array:
  """The kernel gradient of `strided(x, kernel)` pulled back from `grad`:
  [4, 4, I, O]."""
  return _unfold_kernel(_weight_gradient(_padded_fold(x), grad, 2, (0, 0),
                                         tile_for(2)))
