"""What a request to the web app may cost, checked as it arrives.

An upload is read within a time and byte limit before anything is decoded
(`read_body`; the one file of a multipart form, `image_bytes`); its pixels
are counted from the header (`image_size_of`) and reserved from a budget of
pixels in flight (`PixelBudget`) before it is decoded (`decode`), so the
memory all requests hold at once is bounded whatever arrives. Each refusal
is an `HTTPException` with its status and one sentence for the user.
"""

import asyncio
import dataclasses
import io

from PIL import Image
from starlette.exceptions import HTTPException
from starlette.requests import Request

from jaxcolor.data import transforms
from jaxcolor.inference import photo_paths
from jaxcolor.inference import rendering

MAX_RENDER_SIZE = 2048


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request, and all of them together, may cost.

  Attributes:
    max_upload_bytes: the largest request body.
    max_pixels: the largest image, in pixels (decompression bombs are
      refused from their header, before any pixel is decoded).
    max_network_pixels: the largest network input at a render size.
    max_pixels_in_flight: decoded pixels all requests may hold at once;
      requests past it wait their turn (a request holds about 25 bytes a
      pixel at its peak, decoding, recombining and encoding: docs/deploy.md
      measures the default).
    body_timeout_s: the time an upload may take to arrive.
    header_timeout_s: the time a request's head may take to arrive.
    max_connections: connections served at once; more get a 503.
    programs: compiled network programs kept (one per input shape).
  """
  max_upload_bytes: int = 20 << 20
  max_pixels: int = 40_000_000
  max_network_pixels: int = rendering.MAX_NETWORK_PIXELS
  max_pixels_in_flight: int = 120_000_000
  body_timeout_s: float = 30.0
  header_timeout_s: float = 10.0
  max_connections: int = 256
  programs: int = 8

  def __post_init__(self):
    if self.max_pixels_in_flight < self.max_pixels:
      raise ValueError(f"max_pixels_in_flight={self.max_pixels_in_flight:,}"
                       f" is below max_pixels={self.max_pixels:,}: the "
                       "largest image could never be served.")


# An upload over the limit is read and dropped, up to this many times the
# limit and for at most this long, before the 413 goes out: a client still
# sending would otherwise meet a reset that discards the answer.
_DISCARD_FACTOR = 4
_DISCARD_SECONDS = 5.0

# The status of each refusal of `transforms.decode` (its last event); the
# words are the colorize command's (`photo_paths.REFUSALS`).
_STATUS = {"not_an_image": 415, "too_large": 413}


def _refused(event: str) -> HTTPException:
  reason = photo_paths.REFUSALS.get(event, photo_paths.REFUSALS["corrupt"])
  return HTTPException(_STATUS.get(event, 400), f"{reason}.")


class PixelBudget:
  """A counting semaphore over pixels: `acquire(n)` waits until n are free."""

  def __init__(self, total: int):
    self.total, self._free = total, total
    self._condition = asyncio.Condition()

  async def acquire(self, pixels: int) -> None:
    async with self._condition:
      await self._condition.wait_for(lambda: self._free >= pixels)
      self._free -= pixels

  async def release(self, pixels: int) -> None:
    async with self._condition:
      self._free += pixels
      self._condition.notify_all()



def render_size_of(query: str, multiple: int) -> int | None:
  """The render size a query asks for: None (the training size) or pixels.

  Raises:
    HTTPException: 400, not a whole number or out of range.
  """
  if query in ("", "default"):
    return None
  try:
    size = int(query)
  except ValueError:
    raise HTTPException(400, f"render_size={query[:40]!r}: a whole number "
                        "of pixels, or 'default'.") from None
  if not multiple <= size <= MAX_RENDER_SIZE:
    raise HTTPException(400, f"render_size={size}: between {multiple} and "
                        f"{MAX_RENDER_SIZE}.")
  return size


def image_size_of(data: bytes, limits: Limits) -> tuple[int, int]:
  """(width, height) from the image's header, checked; nothing decoded.

  Raises:
    HTTPException: 400 empty, 415 not an image, 413 over the pixel limit.
  """
  if not data:
    raise _refused("empty")
  try:
    with Image.open(io.BytesIO(data)) as image:
      width, height = image.size
  except Image.DecompressionBombError:  # Past Pillow's own, larger limit.
    raise HTTPException(413, "the image is over the limit of "
                        f"{limits.max_pixels:,} pixels (a decompression "
                        "bomb?).") from None
  except Image.UnidentifiedImageError:
    raise _refused("not_an_image") from None
  except Exception:  # noqa: BLE001 (Pillow's header parsers raise anything)
    raise _refused("corrupt") from None
  if width * height > limits.max_pixels:
    raise HTTPException(413, f"{width} x {height} pixels: the image is over "
                        f"the limit of {limits.max_pixels:,} pixels (a "
                        "decompression bomb?).")
  if min(width, height) < 1:
    raise HTTPException(400, f"{width} x {height} pixels: an empty image.")
  if max(width, height) > transforms.MAX_ASPECT_RATIO * min(width, height):
    raise HTTPException(400, f"{width} x {height} pixels: an aspect past "
                        f"{transforms.MAX_ASPECT_RATIO}:1 is not colorized.")
  return width, height


def decode(data: bytes, limits: Limits) -> Image.Image:
  """The upload decoded as training decodes (EXIF orientation, CMYK,
  16-bit, alpha over white), checked before and after decoding."""
  image_size_of(data, limits)
  image, events = transforms.decode(data, max_pixels=limits.max_pixels)
  if image is None:
    raise _refused(events[-1])
  return image


async def read_body(request: Request, limits: Limits) -> bytes:
  """The request body within the byte and time limits.

  Raises:
    HTTPException: 400 a bad Content-Length, 408 too slow, 413 too large.
  """
  declared = request.headers.get("content-length")
  if declared is not None:
    if not declared.strip().isdigit():
      raise HTTPException(400, f"Content-Length {declared[:40]!r} is not a "
                          "byte count.")
    if int(declared) > limits.max_upload_bytes:
      await _discard(request, int(declared), limits)
      raise HTTPException(413, f"an upload of {int(declared):,} bytes is "
                          f"over the limit of {limits.max_upload_bytes:,}.")
  chunks, size = [], 0
  try:
    async with asyncio.timeout(limits.body_timeout_s):
      async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_upload_bytes:
          raise HTTPException(413, "the upload is over the limit of "
                              f"{limits.max_upload_bytes:,} bytes.")
        chunks.append(chunk)
  except TimeoutError:
    raise HTTPException(408, f"the upload did not arrive within "
                        f"{limits.body_timeout_s:g} s.") from None
  return b"".join(chunks)


async def _discard(request: Request, length: int, limits: Limits) -> None:
  left = min(length, _DISCARD_FACTOR * limits.max_upload_bytes)
  try:
    async with asyncio.timeout(_DISCARD_SECONDS):
      async for chunk in request.stream():
        left -= len(chunk)
        if left <= 0:
          break
  except Exception:  # noqa: BLE001 (a client gone or too slow: answer anyway)
    pass


async def image_bytes(request: Request, limits: Limits) -> bytes:
  """The uploaded image: the body itself, or the one file of a form."""
  body = await read_body(request, limits)
  kind = request.headers.get("content-type", "")
  if not kind.startswith("multipart/form-data"):
    return body

  async def replay():
    return {"type": "http.request", "body": body, "more_body": False}

  form_request = Request(request.scope, replay)
  try:
    form = await form_request.form(max_files=1, max_fields=8)
  except HTTPException:
    raise
  except Exception:  # noqa: BLE001 (python-multipart's parse errors)
    raise HTTPException(400, "a malformed multipart form.") from None
  try:
    files = [v for v in form.values() if hasattr(v, "read")]
    if not files:
      raise HTTPException(400, "the form has no file: send the photo as "
                          "its one file field (curl -F file=@photo.jpg).")
    return await files[0].read()
  finally:
    await form.close()
