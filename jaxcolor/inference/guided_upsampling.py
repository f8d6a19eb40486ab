"""a*b* brought to a photo's full size along the edges of its own L*.

The network colours a small copy of the photo; resized back bilinearly, its
a*b* are soft where the photo's edges are sharp, and colour bleeds a few
pixels across them (a red cap into the sky). Joint bilateral upsampling
(Kopf, Cohen, Lischinski, Uyttendaele, "Joint Bilateral Upsampling",
SIGGRAPH 2007) fixes that: each full-resolution pixel p takes the mean of
the network's a*b* samples q around it, weighted by their distance and by
how alike their lightness is to p's,

    ab(p) = sum_q ab(q) f(|p - q|) g(|L*(p) - L*_small(q)|) / sum_q (...)

with f and g Gaussians: f of sigma `SPATIAL_SIGMA` network pixels over the
4 x 4 samples nearest p, g of sigma `RANGE_SIGMA` L* units. Where L* is
flat this is a smooth interpolation; across an edge of L*, the samples of
the other side get almost no weight, so the colour stops at the edge.
L*_small is the photo's L* brought to the network's size (area-averaged).
The result is a convex combination of the network's a*b*, so it stays in
the range they span; the join to L* then clips to sRGB
(`color_space.with_ab`).

The parameters are fixed from the geometry and the L* scale, not tuned on
any score (docs/results.md scores both modes): the 4 x 4 samples are the
bicubic footprint, and 8 L* units separates surfaces a viewer sees as
different while keeping the soft shading within one surface together.

A host computation in NumPy for colorize, the web app and films (any
photo size, nothing to compile); the same sum in jax.numpy inside the
exported serving programs when exported with `--upsample guided`
(jaxcolor/inference/rgb_program.py), where L*_small is JAX's antialiased
linear resize, Pillow's filter up to rounding.
"""

import numpy as np
from PIL import Image

MODES = ("bilinear", "guided")
SPATIAL_SIGMA = 1.0  # Network pixels.
RANGE_SIGMA = 8.0    # L* units.
_OFFSETS = range(-1, 3)  # The 4 samples per axis around a pixel.


def shrink(lightness: np.ndarray, height: int, width: int) -> np.ndarray:
  """L* [H, W] area-averaged (antialiased bilinear) to [height, width]."""
  return np.asarray(Image.fromarray(np.asarray(lightness, np.float32), "F")
                    .resize((width, height), Image.Resampling.BILINEAR))


def joint_bilateral(lightness: np.ndarray, ab: np.ndarray) -> np.ndarray:
  """Full-resolution L* [H, W] (0..100) and the network's a*b* [h, w, C]
  -> a*b* [H, W, C] float32 along L*'s edges."""
  lightness = np.asarray(lightness, np.float32)
  ab = np.asarray(ab, np.float32)
  small = shrink(lightness, *ab.shape[:2])
  return weighted_samples(np, lightness, small, ab)


def weighted_samples(xp, lightness, small, ab):
  """The joint bilateral sum, in NumPy or jax.numpy (`xp`; the serving
  program's form, jaxcolor/inference/rgb_program.py, traces it at symbolic
  sizes): L* [..., H, W], L*_small [..., h, w], a*b* [..., h, w, C] ->
  a*b* [..., H, W, C]."""
  height, width = lightness.shape[-2:]
  h, w = ab.shape[-3:-1]
  # Each full-resolution pixel centre in network-pixel coordinates.
  y = (xp.arange(height, dtype=xp.float32) + 0.5) * h / height - 0.5
  x = (xp.arange(width, dtype=xp.float32) + 0.5) * w / width - 0.5
  y0, x0 = xp.floor(y).astype(xp.int32), xp.floor(x).astype(xp.int32)
  total = 0.0
  weight_sum = 0.0
  spatial = lambda d: xp.exp(-d * d / (2 * SPATIAL_SIGMA ** 2))
  for dy in _OFFSETS:
    rows = xp.clip(y0 + dy, 0, h - 1)
    wy = spatial(y0 + dy - y)
    for dx in _OFFSETS:
      cols = xp.clip(x0 + dx, 0, w - 1)
      wx = spatial(x0 + dx - x)
      difference = lightness - small[..., rows, :][..., cols]
      weight = (wy[:, None] * wx[None, :]
                * xp.exp(-difference * difference / (2 * RANGE_SIGMA ** 2)))
      total = total + weight[..., None] * ab[..., rows, :, :][..., cols, :]
      weight_sum = weight_sum + weight
  # Positive: L* differs by at most 100, whose range weight exp(-78) is
  # still a float32 above zero.
  return (total / weight_sum[..., None]).astype(xp.float32)
