"""Host-side image transforms: robust decode, resize, crop and flip, uint8 RGB.

A record from `sources` is `{'encoded': bytes | None, 'key': str}` plus an
optional `'label'`. `DecodeAndResize` turns it into `{'image': [H, W, 3] uint8}`
whose shorter side is the target size, or, when the file cannot be used, into
a record without `'image'`. Either way the record carries `EVENTS`: for a
skipped file its one reason (`SKIP_KINDS`), for a used one what was done to
it (`CONVERSION_KINDS`, possibly several). The pipeline counts them in the
process that consumes the batches: grain workers are separate processes, so a
counter kept here would be lost with them.

All classes are plain dataclasses in this package module, so grain can pickle
them into worker processes.
"""

import dataclasses
import io
import logging
import math
import threading
from typing import Any

import grain
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Larger images are refused before their pixels are decoded ("decompression
# bomb": a small compressed file that expands to gigabytes). 64 MP is above any
# camera photo in the supported datasets and below Pillow's own guard
# (`PIL.Image.MAX_IMAGE_PIXELS`, 89 MP warn, 179 MP error), which is left as it
# is: a library should not change process-wide Pillow settings. Pillow's error,
# and its warning where warnings are errors, count as 'too_large' too.
MAX_IMAGE_PIXELS = 64_000_000

# Images whose long side exceeds this many times the short side are refused
# before decoding: resized to the crop size on the short side, a 1-pixel-high
# strip within the pixel limit would still grow to gigabytes. 32:1 keeps
# every panorama.
MAX_ASPECT_RATIO = 32

# Why a file is left out (one per skipped file): unreadable (I/O error),
# empty (zero bytes), not_an_image, too_large (see above), extreme_aspect,
# corrupt (truncated or malformed), grayscale (no color to learn).
SKIP_KINDS = ("unreadable", "empty", "not_an_image", "too_large",
              "extreme_aspect", "corrupt", "grayscale")
# What was done to a file that is used (a file may have several).
CONVERSION_KINDS = ("converted_cmyk", "converted_palette", "converted_alpha",
                    "converted_16bit", "converted_other", "exif_rotated",
                    "upscaled")

# An RGB image is treated as grayscale when the mean over pixels of
# max(R, G, B) - min(R, G, B) is at most this (on 0..255), measured after the
# resize. Gray photos saved as RGB JPEG measure 0 to about 1; photos at or
# below 2 are, in the photo set this was chosen on, product shots on white
# and black-and-white close-ups without visible color, while a brown beetle
# on white paper measures above it and is kept (docs/design.md, "Data").
GRAYSCALE_MAX_MEAN_SPREAD = 2.0

# Key of the tuple of event names every transformed record carries.
EVENTS = "_events"

# Pillow raises many exception types on malformed files (OSError, SyntaxError,
# ValueError, struct.error, IndexError, EOFError, ...), none of them a bug of
# ours: decoding catches them all and reports the file as corrupt.
_DECODE_ERRORS = (Exception,)

# Skipped files named in the log per kind and process; the rest are only
# counted (a dataset can hold thousands of grayscale photos).
MAX_WARNINGS_PER_KIND = 20

_warned_keys: set[str] = set()
_warnings_per_kind: dict[str, int] = {}
_warned_lock = threading.Lock()


def _warn_once(key: str, kind: str) -> None:
  """Logs a skipped file once per process (files recur every epoch)."""
  with _warned_lock:
    if key in _warned_keys:
      return
    _warned_keys.add(key)
    shown = _warnings_per_kind.get(kind, 0)
    _warnings_per_kind[kind] = shown + 1
  if shown < MAX_WARNINGS_PER_KIND:
    logging.warning("jaxcolor.data: skipping %s (%s).", key, kind)
  elif shown == MAX_WARNINGS_PER_KIND:
    logging.warning("jaxcolor.data: more files skipped as %s; counted, not "
                    "named.", kind)


def _reduce_while_decoding(im: Image.Image, short_side: int) -> None:
  """Lets a JPEG decode at 1/2, 1/4 or 1/8 scale when the target is small.

  The DCT-domain reduction is kept at least twice the target size (Pillow's
  `thumbnail` uses the same `reducing_gap` of 2), so the bicubic resize that
  follows still does the final, antialiased step. No effect on other formats.
  """
  scale = 2 * short_side / min(im.size)
  if scale < 1:
    im.draft("RGB", (math.ceil(im.width * scale), math.ceil(im.height * scale)))


def _to_rgb(im: Image.Image, events: list[str]) -> Image.Image:
  """Any loaded Pillow image -> 'RGB' (or 'L' for single-channel sources)."""
  mode = im.mode
  if mode == "P":
    events.append("converted_palette")
    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
  elif mode == "CMYK":
    events.append("converted_cmyk")
    im = im.convert("RGB")
  elif mode in ("I", "F") or mode.startswith("I;16"):
    # 16-bit (or 32-bit) single channel: map the 16-bit range onto 8 bits,
    # which Pillow's convert('L') would clip instead of scale.
    events.append("converted_16bit")
    values = np.asarray(im, dtype=np.float32)
    if values.max(initial=0) > 255:
      values = values / 257.0
    im = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
  elif mode == "1":
    im = im.convert("L")
  elif mode in ("L", "RGB"):
    if "transparency" in im.info:
      im = im.convert("RGBA")
  elif mode not in ("RGBA", "LA", "PA", "La", "RGBa"):
    events.append("converted_other")  # YCbCr, LAB, HSV, ...
    im = im.convert("RGB")
  if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
    # Transparent pixels have no defined color; white is what a viewer
    # shows behind them.
    events.append("converted_alpha")
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    im = Image.alpha_composite(background, rgba).convert("RGB")
  return im


def decode(encoded: bytes | None, *, short_side: int | None = None,
           max_pixels: int = MAX_IMAGE_PIXELS
           ) -> tuple[Image.Image | None, list[str]]:
  """Decodes an image file into an upright 'RGB' or 'L' Pillow image.

  Args:
    encoded: the file's bytes (None: the file could not be read).
    short_side: the size the caller will resize to; lets large JPEGs decode
      at reduced scale. None: full resolution.
    max_pixels: images with more pixels are refused ('too_large').

  Returns:
    (image, events). image is None when the file is unusable; then the last
    event names why: 'unreadable', 'empty', 'not_an_image', 'too_large',
    'extreme_aspect' or 'corrupt'.
  """
  if encoded is None:
    return None, ["unreadable"]
  if not encoded:
    return None, ["empty"]
  events: list[str] = []
  try:
    im = Image.open(io.BytesIO(encoded))
    if im.width * im.height > max_pixels:
      return None, ["too_large"]
    if max(im.size) > MAX_ASPECT_RATIO * min(im.size):
      return None, ["extreme_aspect"]
    if short_side is not None:
      _reduce_while_decoding(im, short_side)
    if im.mode in ("RGB", "RGBA") and any(
        ";16" in str(tile[3]) for tile in im.tile):
      events.append("converted_16bit")  # 48/64-bit PNG: Pillow keeps 8 bits.
    im.load()
    if im.getexif().get(0x0112, 1) not in (1, None):
      events.append("exif_rotated")
      ImageOps.exif_transpose(im, in_place=True)
    im = _to_rgb(im, events)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning):
    return None, ["too_large"]
  except UnidentifiedImageError:
    return None, ["not_an_image"]
  except _DECODE_ERRORS:
    return None, events + ["corrupt"]
  return im, events


def resize_shorter_side(im: Image.Image, size: int) -> tuple[Image.Image, bool]:
  """Bicubic (antialiased) resize so min(H, W) == size; (image, upscaled)."""
  width, height = im.size
  scale = size / min(width, height)
  if scale == 1:
    return im, False
  new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
  return im.resize(new_size, Image.Resampling.BICUBIC), scale > 1


def is_grayscale(rgb: np.ndarray) -> bool:
  """True when the channels of [H, W, 3] uint8 are equal up to JPEG noise."""
  # Element-wise max/min of the three planes: numpy's reduction over a
  # length-3 last axis is 25x slower and would cost more than the decode.
  red, green, blue = (rgb[..., c].astype(np.int16) for c in range(3))
  spread = (np.maximum(np.maximum(red, green), blue)
            - np.minimum(np.minimum(red, green), blue))
  return float(spread.mean()) <= GRAYSCALE_MAX_MEAN_SPREAD


def random_crop_flip(image: np.ndarray, size: int,
                     rng: np.random.Generator) -> np.ndarray:
  """Random [size, size] window of [H, W, 3], mirrored with probability 1/2."""
  height, width = image.shape[:2]
  top = int(rng.integers(0, height - size + 1))
  left = int(rng.integers(0, width - size + 1))
  crop = image[top:top + size, left:left + size]
  if rng.random() < 0.5:
    crop = crop[:, ::-1]
  return np.ascontiguousarray(crop)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  height, width = image.shape[:2]
  top, left = (height - size) // 2, (width - size) // 2
  return np.ascontiguousarray(image[top:top + size, left:left + size])


@dataclasses.dataclass(frozen=True)
class DecodeAndResize(grain.transforms.Map):
  """Source record -> {'image': [H, W, 3] uint8 with min(H, W) = image_size}.

  Unusable files and (with `drop_grayscale`) grayscale images come out as a
  record without 'image' and with `EVENTS` = (why,); a used image's `EVENTS`
  are its conversions.
  """
  image_size: int
  drop_grayscale: bool = True
  max_pixels: int = MAX_IMAGE_PIXELS

  def map(self, record: dict[str, Any]) -> dict[str, Any]:
    im, events = decode(record["encoded"], short_side=self.image_size,
                        max_pixels=self.max_pixels)
    out: dict[str, Any] = {}
    if "label" in record:
      out["label"] = np.int32(record["label"])
    if im is not None and self.drop_grayscale and im.mode == "L":
      events.append("grayscale")
    elif im is not None:
      im, upscaled = resize_shorter_side(
          im.convert("RGB") if im.mode == "L" else im, self.image_size)
      image = np.asarray(im)
      if self.drop_grayscale and is_grayscale(image):
        events.append("grayscale")
      else:
        if upscaled:
          events.append("upscaled")
        out["image"] = image
    if "image" not in out:
      # A skipped file counts once, under its reason: a grayscale 16-bit
      # PNG is a skipped grayscale image, not also a 16-bit conversion.
      events = events[-1:]
      _warn_once(record.get("key", "?"), events[0])
    out[EVENTS] = tuple(events)
    return out


@dataclasses.dataclass(frozen=True)
class RandomCropFlip(grain.transforms.RandomMap):
  """Training augmentation: random square crop and horizontal flip."""
  image_size: int

  def random_map(self, element: dict[str, Any],
                 rng: np.random.Generator) -> dict[str, Any]:
    if "image" not in element:
      return element
    return {**element,
            "image": random_crop_flip(element["image"], self.image_size, rng)}


@dataclasses.dataclass(frozen=True)
class CenterCropWithMask(grain.transforms.Map):
  """Evaluation: center crop, and a `mask` that is False for skipped files.

  A skipped file keeps its place as a black image with mask False, so every
  process runs the same number of evaluation batches whatever it skipped.
  """
  image_size: int
  has_labels: bool

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    usable = "image" in element
    out = {
        "image": (center_crop(element["image"], self.image_size) if usable
                  else np.zeros((self.image_size, self.image_size, 3),
                                np.uint8)),
        "mask": np.bool_(usable),
        EVENTS: element[EVENTS],
    }
    if self.has_labels:
      out["label"] = element.get("label", np.int32(0))
    return out
