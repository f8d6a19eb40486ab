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

A host computation in NumPy (colorize, the web app and films; any photo
size, nothing to compile). The exported serving program keeps bilinear
upsampling (jaxcolor/inference/rgb_program.py).
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
  height, width = lightness.shape
  h, w = ab.shape[:2]
  small = shrink(lightness, h, w)
  # Each full-resolution pixel centre in network-pixel coordinates.
  y = (np.arange(height, dtype=np.float32) + 0.5) * h / height - 0.5
  x = (np.arange(width, dtype=np.float32) + 0.5) * w / width - 0.5
  y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
  total = np.zeros((height, width, ab.shape[-1]), np.float32)
  weight_sum = np.zeros((height, width), np.float32)
  spatial = lambda d: np.exp(-d * d / (2 * SPATIAL_SIGMA ** 2))
  for dy in _OFFSETS:
    rows = np.clip(y0 + dy, 0, h - 1)
    wy = spatial(y0 + dy - y)
    for dx in _OFFSETS:
      cols = np.clip(x0 + dx, 0, w - 1)
      wx = spatial(x0 + dx - x)
      index = np.ix_(rows, cols)
      difference = lightness - small[index]
      weight = (wy[:, None] * wx[None, :]
                * np.exp(-difference * difference / (2 * RANGE_SIGMA ** 2)))
      total += weight[..., None] * ab[index]
      weight_sum += weight
  # Positive: L* differs by at most 100, whose range weight exp(-78) is
  # still a float32 above zero.
  return total / weight_sum[..., None]
