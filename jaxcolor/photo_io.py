"""Photos in and out of the colorizer: decoding, the network's input at the
training size or a render size, full-resolution recombination, and files.

How an image of any size is colorized: the network runs on the image's
lightness at a small size, either squeezed to the training size's square
(`squeezed`, as Zhang et al.'s demo resizes every photo to 256 x 256) or
with its shorter side at a render size and its aspect kept (`rendered`,
padded by reflection to what the network's strides need); its a*b* are
resized back to the photo's size (bilinear) and joined to the photo's own
full-resolution L* (`recombine`). Chrominance carries little fine detail
(the premise of colorizing in Lab), so the result keeps every edge of the
input, and L* is the input's exactly (up to RGB gamut clipping).
"""

import collections
import concurrent.futures
import os
import pathlib
import threading
import time
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from jaxcolor import color
from jaxcolor.data import sources
from jaxcolor.data import transforms

FORMATS = {"png": ".png", "jpeg": ".jpg"}
# zlib level of written PNGs: 1 encodes a 256 x 384 photo about 5 times
# faster than Pillow's default 6 for files about 6 % larger; at 6 the
# encoding was the slowest stage of colorizing (docs/benchmarks.md).
PNG_COMPRESS_LEVEL = 1
# Pixels per call of the full-resolution colour conversions, at most.
_CHUNK_PIXELS = 1 << 20
_MIN_CHUNK = 1 << 14


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


def render_shape(width: int, height: int, render_size: int) -> tuple[int, int]:
  """(height, width) with the shorter side `render_size`, aspect kept."""
  scale = render_size / min(width, height)
  return (max(round(height * scale), 1), max(round(width * scale), 1))


def rendered(image: Image.Image, render_size: int, multiple: int
             ) -> tuple[np.ndarray, tuple[int, int]]:
  """The image at `render_size` (shorter side; aspect kept), padded by
  reflection at the bottom and right to multiples of `multiple`.

  Returns (uint8 [H', W', 3], (H, W) of the unpadded part).
  """
  height, width = render_shape(*image.size, render_size)
  small = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC)
                     .convert("RGB"))
  pad = (-height % multiple, -width % multiple)
  if pad[0] >= height or pad[1] >= width:  # Reflection needs that much image.
    raise ValueError(f"render size {render_size} gives {height}x{width} "
                     f"pixels, too few to pad to a multiple of {multiple}.")
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


def recombine(image: Image.Image, ab: np.ndarray) -> np.ndarray:
  """The image's full-resolution L* with the upsampled a*b* -> uint8 RGB."""
  width, height = image.size
  return join_lightness(image, upsample_ab(ab, width, height))


def join_lightness(image: Image.Image, ab: np.ndarray) -> np.ndarray:
  """The image's L* with a*b* of its own size [H, W, 2] -> uint8 RGB."""
  width, height = image.size
  rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
  ab = np.asarray(ab, np.float32).reshape(-1, 2)
  return _in_chunks(color.with_ab, rgb, ab).reshape(height, width, 3)


# -- files ---------------------------------------------------------------------


def find_inputs(inputs: Iterable[str]) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """(file, output path relative to OUTPUT without suffix) for each input.

  A file keeps its stem; a folder's images keep their subfolders. When two
  inputs would share an output name (photo.jpg and photo.png), each of them
  gets its extension in the name (photo_jpg, photo_png).
  """
  found = []
  for item in inputs:
    path = pathlib.Path(item).expanduser()
    if path.is_dir():
      for relative in sources.list_images(path):
        relative = pathlib.Path(relative)
        found.append((path / relative, relative.with_suffix("")))
    elif path.is_file():
      found.append((path, pathlib.Path(path.stem)))
    else:
      raise FileNotFoundError(f"No such file or folder: {item}")
  seen_files, distinct = set(), []
  for file, name in found:  # A file named twice (itself and its folder).
    if file.resolve() not in seen_files:
      seen_files.add(file.resolve())
      distinct.append((file, name))
  counts: dict[pathlib.Path, int] = {}
  for _, name in distinct:
    counts[name] = counts.get(name, 0) + 1
  unique, taken = [], set()
  for file, name in distinct:
    if counts[name] > 1:
      name = name.with_name(f"{name.name}_{file.suffix.lstrip('.').lower()}")
    base, number = name, 2
    while name in taken:  # Same stem and extension in different inputs.
      name, number = base.with_name(f"{base.name}_{number}"), number + 1
    taken.add(name)
    unique.append((file, name))
  return unique


def load_image(path: pathlib.Path) -> Image.Image:
  """Decodes a file as training does (EXIF, CMYK, 16-bit, alpha, palette)."""
  image, events = transforms.decode(path.read_bytes())
  if image is None:
    raise ValueError(f"cannot use {path}: {events[-1]}")
  return image


def save_image(rgb: np.ndarray, path: pathlib.Path, file_format: str,
               jpeg_quality: int = 95) -> None:
  """uint8 RGB -> `path`, written aside and renamed (never half-written)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(rgb)
  temporary = path.with_name(f".{path.name}.partial")
  with open(temporary, "wb") as f:
    if file_format == "jpeg":
      image.save(f, format="JPEG", quality=jpeg_quality)
    else:
      image.save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
  temporary.replace(path)


def default_threads() -> int:
  """`colorize_files`' host threads when not given: the cores, at most 8."""
  return max(1, min(8, os.cpu_count() or 1))


def colorize_files(colorizer, inputs: Sequence[str], output: str, *,
                   file_format: str = "png", jpeg_quality: int = 95,
                   progress: bool = True, threads: int | None = None
                   ) -> dict[str, Any]:
  """Colorizes every input file or folder into `output` with `colorizer`
  (a `jaxcolor.colorize.Colorizer`), its batch at a time.

  A pipeline: `threads` host threads (default: the machine's cores, at most
  8) decode the next batch while the network runs on this one, and
  recombine and encode the previous batch's photos; at most two batches of
  photos wait to be written, so memory stays bounded on any number of files.

  Returns:
    {'written': [paths], 'failed': {input path: reason}, 'seconds': {stage:
     host seconds summed over threads}} with the stages 'decode',
     'network' (resize, the device's work and the copy back) and 'write'
     (a*b* upsampling, recombination and encoding).
  """
  if file_format not in FORMATS:
    raise ValueError(f"file_format={file_format!r}: one of {', '.join(FORMATS)}.")

  jobs = find_inputs(inputs)
  output_dir = pathlib.Path(output)
  written, failed = [], {}
  seconds = {"decode": 0.0, "network": 0.0, "write": 0.0}
  lock = threading.Lock()
  bar = tqdm(total=len(jobs), unit="image", disable=not progress)

  def timed(stage, fn, *args):
    start = time.perf_counter()
    try:
      return fn(*args)
    finally:
      with lock:
        seconds[stage] += time.perf_counter() - start

  def write(image, ab, target):
    save_image(recombine(image, ab), target, file_format, jpeg_quality)

  def finish(writes):
    for target, future in writes:
      future.result()  # A failed write (disk full) stops the run.
      written.append(str(target))
      bar.update(1)

  batches = [jobs[i:i + colorizer.batch_size]
             for i in range(0, len(jobs), colorizer.batch_size)]
  workers = threads or default_threads()
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    def decode(batch):
      return [(file, name, pool.submit(timed, "decode", load_image, file))
              for file, name in batch]

    pending_writes: collections.deque = collections.deque()
    decoding = decode(batches[0]) if batches else []
    for index in range(len(batches)):
      current = decoding
      decoding = decode(batches[index + 1]) if index + 1 < len(batches) else []
      batch = []
      for file, name, future in current:
        try:
          batch.append((file, name, future.result()))
        except (OSError, ValueError) as e:
          failed[str(file)] = str(e)
          bar.update(1)
      if not batch:
        continue
      abs_ = timed("network", colorizer.predict_ab,
                   [image for _, _, image in batch])
      writes = []
      for (file, name, image), ab in zip(batch, abs_):
        target = output_dir / name.with_name(name.name + FORMATS[file_format])
        writes.append((target, pool.submit(timed, "write", write, image, ab,
                                           target)))
      pending_writes.append(writes)
      while len(pending_writes) > 2:
        finish(pending_writes.popleft())
    while pending_writes:
      finish(pending_writes.popleft())
  bar.close()
  return {"written": written, "failed": failed, "seconds": seconds}
