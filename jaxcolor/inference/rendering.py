"""Photos as the colorizer sees them: the network's input at the training
size or a render size, and full-resolution recombination. Files (which
inputs, decoding, writing, the loop over them) are jaxcolor/inference/photo_paths.py.

How an image of any size is colorized: the network runs on the image's
lightness at a small size, either squeezed to the training size's square
(`squeezed`, as Zhang et al.'s demo resizes every photo to 256 x 256) or
with its shorter side at a render size and its aspect kept (`rendered`,
padded by reflection to what the network's strides need); its a*b* are
resized back to the photo's size (bilinear) and joined to the photo's own
full-resolution L* (`recombine`). Chrominance carries little fine detail
(the premise of colorizing in Lab), so the result keeps every edge of the
input, and L* is the input's exactly (up to RGB gamut clipping). With
`upsample='guided'` the a*b* follow the edges of the full-resolution L*
instead of blurring across them (jaxcolor/inference/guided_upsampling.py).
"""

import numpy as np
from PIL import Image

from jaxcolor.core import color_space
from jaxcolor.data import transforms
from jaxcolor.inference import guided_upsampling

# zlib level of written PNGs: 1 encodes a 256 x 384 photo about 5 times
# faster than Pillow's default 6 for files about 6 % larger; at 6 the
# encoding was the slowest stage of colorizing (docs/benchmarks.md).
PNG_COMPRESS_LEVEL = 1
# Pixels per call of the full-resolution color conversions, at most.
_CHUNK_PIXELS = 1 << 20
_MIN_CHUNK = 1 << 14
# Pixels of one network input at a render size, at most (2048 x 2048): what
# one batch element may ask of the device, whatever the photo's shape.
MAX_NETWORK_PIXELS = 1 << 22


def as_image(image: np.ndarray | Image.Image) -> Image.Image:
  """An array or Pillow image -> Pillow 'L' or 'RGB' (alpha over white)."""
  if isinstance(image, Image.Image):
    return transforms._to_rgb(image, [])  # noqa: SLF001 (same conversions as training)
  array = np.asarray(image)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
    raise ValueError(f"Expected an image [H, W], [H, W, 1], [H, W, 3] or "
                     f"[H, W, 4]; got shape {array.shape}.")
  if array.dtype == np.uint16:
    array = array / 65535.0
  if np.issubdtype(array.dtype, np.floating):
    array = np.round(np.clip(array, 0.0, 1.0) * 255.0)
  array = array.astype(np.uint8)
  mode = "L" if array.ndim == 2 else {3: "RGB", 4: "RGBA"}[array.shape[-1]]
  return transforms._to_rgb(Image.fromarray(array, mode), [])  # noqa: SLF001


def squeezed(image: Image.Image, size: int) -> np.ndarray:
  """The whole image squeezed to [size, size, 3] uint8, resized as in training."""
  small = image.resize((size, size), Image.Resampling.BICUBIC)
  return np.asarray(small.convert("RGB"))


class NetworkInputTooLarge(ValueError):
  """A render size that would give the network more pixels than allowed."""


def render_shape(width: int, height: int, render_size: int) -> tuple[int, int]:
  """(height, width) with the shorter side `render_size`, aspect kept."""
  scale = render_size / min(width, height)
  return (max(round(height * scale), 1), max(round(width * scale), 1))


def rendered(image: Image.Image, render_size: int, multiple: int, *,
             step: int | None = None,
             max_pixels: int = MAX_NETWORK_PIXELS
             ) -> tuple[np.ndarray, tuple[int, int]]:
  """The image at `render_size` (shorter side; aspect kept), padded by
  reflection at the bottom and right to multiples of `multiple`, or of
  `step` (a multiple of `multiple`, at most a quarter of `render_size`:
  fewer distinct shapes, so fewer compiled programs, for a server).

  Returns (uint8 [H', W', 3], (H, W) of the unpadded part).

  Raises:
    ValueError: an aspect past the data pipeline's limit
      (`transforms.MAX_ASPECT_RATIO`), a padded size over `max_pixels`
      (checked before anything is resized: a 400 x 1 strip at render size
      64 would be 64 x 25,600 pixels a batch element), or too few pixels
      to pad.
  """
  width, height = image.size
  if max(width, height) > transforms.MAX_ASPECT_RATIO * min(width, height):
    raise ValueError(f"{width} x {height} pixels: an aspect past "
                     f"{transforms.MAX_ASPECT_RATIO}:1 is not colorized.")
  height, width = render_shape(width, height, render_size)
  step = multiple if step is None else step
  if step % multiple:
    raise ValueError(f"step={step} is not a multiple of {multiple}.")
  padded = (-(-height // step) * step, -(-width // step) * step)
  if padded[0] * padded[1] > max_pixels:
    raise NetworkInputTooLarge(
        f"render size {render_size} gives {padded[0]} x {padded[1]} network "
        f"pixels, over the limit of {max_pixels:,}: choose a smaller render "
        "size.")
  pad = (padded[0] - height, padded[1] - width)
  if pad[0] >= height or pad[1] >= width:  # Reflection needs that much image.
    raise ValueError(f"render size {render_size} gives {height}x{width} "
                     f"pixels, too few to pad to a multiple of {step}.")
  small = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC)
                     .convert("RGB"))
  return (np.pad(small, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="reflect"),
          (height, width))


def _chunks(count: int) -> list[tuple[int, int]]:
  """(start, padded size) of the calls that cover `count` pixels: whole
  `_CHUNK_PIXELS` chunks, then the rest as powers of two (its binary
  digits) down to `_MIN_CHUNK`, the last padded up to that. A handful of
  compiled shapes serve every image size, and at most `_MIN_CHUNK` pixels
  are padding (a 256 x 384 photo: 65,536 + 32,768, none)."""
  pieces, start = [], 0
  while count - start >= _CHUNK_PIXELS:
    pieces.append((start, _CHUNK_PIXELS))
    start += _CHUNK_PIXELS
  size = _CHUNK_PIXELS >> 1
  while start < count:
    while size > _MIN_CHUNK and size > count - start:
      size >>= 1
    pieces.append((start, size))
    start += size
  return pieces


def _in_chunks(fn, *columns: np.ndarray) -> np.ndarray:
  """`fn` over [N, ...] pixel arrays (equal N) in the pieces of `_chunks`,
  each zero-padded to its size: [N, ...] of `fn`'s dtype."""
  count = len(columns[0])
  out = None
  for start, size in _chunks(count) or [(0, _MIN_CHUNK)]:
    parts = []
    for column in columns:
      part = np.zeros((size,) + column.shape[1:], column.dtype)
      part[:min(size, count - start)] = column[start:start + size]
      parts.append(part)
    result = np.asarray(fn(*parts))
    if out is None:
      out = np.empty((count,) + result.shape[1:], result.dtype)
    out[start:start + size] = result[:count - start]
  return out


def upsample_ab(ab: np.ndarray, width: int, height: int) -> np.ndarray:
  """[h, w, 2] a*b* -> [height, width, 2], bilinear (antialiased if smaller)."""
  channels = [np.asarray(Image.fromarray(np.ascontiguousarray(ab[..., c]), "F")
                         .resize((width, height), Image.Resampling.BILINEAR))
              for c in range(2)]
  return np.stack(channels, axis=-1)


def recombine(image: Image.Image, ab: np.ndarray,
              upsample: str = "bilinear") -> np.ndarray:
  """The image's full-resolution L* with the upsampled a*b* -> uint8 RGB.

  `upsample`: 'bilinear', or 'guided' (joint bilateral upsampling along
  the image's own L*: jaxcolor/inference/guided_upsampling.py).
  """
  if upsample not in guided_upsampling.MODES:
    raise ValueError(f"upsample={upsample!r}: one of "
                     f"{', '.join(guided_upsampling.MODES)}.")
  width, height = image.size
  if upsample == "guided":
    return join_lightness(image, guided_upsampling.joint_bilateral(
        lightness_of(image), ab))
  return join_lightness(image, upsample_ab(ab, width, height))


def lightness_of(image: Image.Image) -> np.ndarray:
  """The image's L* [H, W] float32 (0..100)."""
  width, height = image.size
  rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
  return _in_chunks(lambda x: color_space.rgb_to_lab(x)[..., 0],
                    rgb).reshape(height, width)


def join_lightness(image: Image.Image, ab: np.ndarray) -> np.ndarray:
  """The image's L* with a*b* of its own size [H, W, 2] -> uint8 RGB."""
  width, height = image.size
  rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
  ab = np.asarray(ab, np.float32).reshape(-1, 2)
  return _in_chunks(color_space.with_ab, rgb, ab).reshape(height, width, 3)
