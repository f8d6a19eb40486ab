"""A local web app and HTTP API for a trained colorizer.

  python -m jaxcolor.serve --workdir runs/default      # or --model PATH_OR_URL
      [--host 127.0.0.1] [--port 8000] [--max_upload_mb 20] [--max_megapixels 40]

  GET  /                      the page: drop or choose a photo, gray input and
                              result side by side (a before/after slider),
                              render size, download
  POST /api/colorize[?render_size=N]
                              image bytes in, PNG out (same size); errors are
                              4xx with {"error": "..."}: 411 no length, 413
                              over the upload or pixel limit (decompression
                              bombs), 415 not an image, 400 a truncated or
                              corrupt image or a bad render size
  GET  /api/info              the model: system, output, step, sizes

Binds 127.0.0.1 unless told otherwise. The standard library's threading
HTTP server, not Gradio: no extra dependency, and every limit and error is
ours to word and test. Requests are queued to one worker that colorizes up
to --batch_size of them per network call (those with the same render size),
so concurrent requests are batched and none is lost.
"""

import concurrent.futures
import dataclasses
import http.server
import io
import json
import queue
import sys
import threading
import time
import urllib.parse
from typing import Sequence

from absl import flags
from PIL import Image

from jaxcolor import colorize

MAX_RENDER_SIZE = 2048


class RequestError(Exception):
  """A client error: its HTTP status and one line for the user."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


@dataclasses.dataclass
class Limits:
  max_upload_bytes: int = 20 << 20
  max_pixels: int = 40_000_000


# An upload over the limit is read and dropped, up to this many times the
# limit and for at most this long, before the 413 goes out: a client still
# sending would otherwise meet a closed socket (a broken pipe, or a reset
# that discards the answer) instead of the error's message.
_DISCARD_FACTOR = 4
_DISCARD_SECONDS = 5.0


def decode(data: bytes, limits: Limits) -> Image.Image:
  """The uploaded image, checked before and after decoding."""
  try:
    image = Image.open(io.BytesIO(data))
  except (Image.UnidentifiedImageError, OSError):
    raise RequestError(415, "not an image Pillow can read (JPEG, PNG, WebP, "
                       "TIFF, BMP, ...).") from None
  width, height = image.size
  if width * height > limits.max_pixels:  # Before any pixel is decoded.
    raise RequestError(413, f"{width} x {height} pixels is over the limit of "
                       f"{limits.max_pixels:,} (a decompression bomb?).")
  try:
    image.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise RequestError(400, f"truncated or corrupt image ({e}).") from None
  return image


class Batcher:
  """One worker thread colorizing queued requests, batched by render size."""

  def __init__(self, colorizer: colorize.Colorizer, wait_s: float = 0.02):
    self._colorizers = {None: colorizer}
    self._base, self._wait_s = colorizer, wait_s
    self._lock = threading.Lock()
    self._queue: queue.Queue = queue.Queue()
    threading.Thread(target=self._work, daemon=True).start()

  def colorizer(self, render_size: int | None) -> colorize.Colorizer:
    with self._lock:
      if render_size not in self._colorizers:
        self._colorizers[render_size] = self._base.with_render_size(render_size)
      return self._colorizers[render_size]

  def submit(self, image: Image.Image, render_size: int | None
             ) -> concurrent.futures.Future:
    future = concurrent.futures.Future()
    self._queue.put((render_size, image, future))
    return future

  def _work(self) -> None:
    while True:
      first = self._queue.get()
      batch, rest = [first], []
      size = self._base.batch_size
      try:
        while len(batch) < size:
          item = self._queue.get(timeout=self._wait_s)
          (batch if item[0] == first[0] else rest).append(item)
      except queue.Empty:
        pass
      for item in rest:  # Other render sizes wait for the next round.
        self._queue.put(item)
      try:
        results = self.colorizer(first[0]).colorize_batch(
            [image for _, image, _ in batch])
        for (_, _, future), rgb in zip(batch, results):
          future.set_result(rgb)
      except Exception as e:  # noqa: BLE001 (each waiting request gets it)
        for _, _, future in batch:
          future.set_exception(e)


def make_handler(batcher: Batcher, limits: Limits, info: dict):
  page = _PAGE.replace("__TITLE__", f"jaxcolor: {info['system']} "
                       f"({info['output']}, step {info['step']})")

  class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "jaxcolor"

    def log_message(self, format, *args):  # noqa: A002
      pass

    def _send(self, status: int, body: bytes, kind: str) -> None:
      self.send_response(status)
      self.send_header("Content-Type", kind)
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
      self.close_connection = True  # The unread body must not be parsed.
      self._send(status, json.dumps({"error": message}).encode(),
                 "application/json")

    def _discard(self, length: int) -> None:
      """Reads and drops up to `length` bytes of the request body, within
      the `_DISCARD_*` bounds; what is left is cut off with the connection."""
      left = min(length, _DISCARD_FACTOR * limits.max_upload_bytes)
      deadline = time.monotonic() + _DISCARD_SECONDS
      try:
        self.connection.settimeout(_DISCARD_SECONDS)
        while left > 0 and time.monotonic() < deadline:
          chunk = self.rfile.read1(min(left, 1 << 16))
          if not chunk:
            break
          left -= len(chunk)
      except OSError:
        pass

    def do_GET(self):
      path = urllib.parse.urlsplit(self.path).path
      if path == "/":
        self._send(200, page.encode(), "text/html; charset=utf-8")
      elif path == "/api/info":
        self._send(200, json.dumps(info).encode(), "application/json")
      else:
        self._error(404, f"no page {path}")

    def do_POST(self):
      url = urllib.parse.urlsplit(self.path)
      if url.path != "/api/colorize":
        return self._error(404, f"no endpoint {url.path}")
      try:
        render_size = _render_size(urllib.parse.parse_qs(url.query))
        length = self.headers.get("Content-Length")
        if length is None:
          raise RequestError(411, "send the image with a Content-Length.")
        if not length.strip().isdigit():
          raise RequestError(400, f"Content-Length {length!r} is not a "
                             "byte count.")
        length = int(length)
        if length > limits.max_upload_bytes:
          self._discard(length)
          raise RequestError(413, f"upload of {length:,} bytes is over "
                             f"the limit of {limits.max_upload_bytes:,}.")
        image = decode(self.rfile.read(length), limits)
        if render_size is not None:
          batcher.colorizer(render_size)  # A size it cannot take: 400 now.
        rgb = batcher.submit(image, render_size).result()
      except RequestError as e:
        return self._error(e.status, str(e))
      except ValueError as e:  # A render size the network cannot take.
        return self._error(400, str(e))
      out = io.BytesIO()
      Image.fromarray(rgb).save(out, format="PNG")
      self._send(200, out.getvalue(), "image/png")

  return Handler


def _render_size(query: dict) -> int | None:
  values = query.get("render_size", [""])
  if values[0] in ("", "default"):
    return None
  try:
    size = int(values[0])
  except ValueError:
    raise RequestError(400, f"render_size={values[0]!r}: a whole number of "
                       "pixels, or 'default'.") from None
  if not 1 <= size <= MAX_RENDER_SIZE:
    raise RequestError(400, f"render_size={size}: between 1 and "
                       f"{MAX_RENDER_SIZE}.")
  return size


def make_server(colorizer: colorize.Colorizer, host: str = "127.0.0.1",
                port: int = 8000, limits: Limits | None = None
                ) -> http.server.ThreadingHTTPServer:
  """The server, bound but not yet serving (`serve_forever()`)."""
  info = {"system": colorizer.system.config.system, "output": colorizer.output,
          "step": colorizer.step, "image_size": colorizer.image_size,
          "max_render_size": MAX_RENDER_SIZE}
  handler = make_handler(Batcher(colorizer), limits or Limits(), info)
  server = http.server.ThreadingHTTPServer((host, port), handler)
  server.daemon_threads = True
  return server


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    print(f"Unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
    sys.exit(2)
  FLAGS = flags.FLAGS
  if (FLAGS.workdir is None) == (FLAGS.model is None):
    print("Error: give exactly one of --workdir and --model.", file=sys.stderr)
    sys.exit(2)
  try:
    colorizer = (colorize.Colorizer.from_pretrained(FLAGS.model,
                                                    batch_size=FLAGS.batch_size)
                 if FLAGS.model else colorize.Colorizer.from_workdir(
                     FLAGS.workdir, batch_size=FLAGS.batch_size))
    server = make_server(colorizer, FLAGS.host, FLAGS.port, Limits(
        FLAGS.max_upload_mb << 20, int(FLAGS.max_megapixels * 1e6)))
  except (FileNotFoundError, ValueError, OSError) as e:
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(2)
  host, port = server.server_address[:2]
  print(f"Serving {colorizer.output!r} on http://{host}:{port}/ "
        "(Ctrl-C stops).", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "A training run's directory.")
  flags.DEFINE_string("model", None, "A model artifact (path or URL).")
  flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0: every "
                      "interface; only on a trusted network).")
  flags.DEFINE_integer("port", 8000, "Port (0: any free one).")
  flags.DEFINE_integer("batch_size", 8, "Requests per network call.")
  flags.DEFINE_integer("max_upload_mb", 20, "Largest upload, MiB.")
  flags.DEFINE_float("max_megapixels", 40.0, "Largest image, megapixels.")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}
#drop{border:2px dashed #888;padding:2em;text-align:center;border-radius:8px}
#drop.over{background:#eef}
#compare{position:relative;display:inline-block;margin-top:1em}
#compare img{display:block;max-width:100%}
#after{position:absolute;top:0;left:0;clip-path:inset(0 0 0 50%)}
#status{margin:1em 0;color:#444}
</style></head><body>
<h1>__TITLE__</h1>
<div id="drop">Drop a photo here, or <input type="file" id="file" accept="image/*"></div>
<p>Render size: <select id="size"><option value="default">training size</option>
<option>256</option><option>384</option><option>512</option><option>768</option></select>
<a id="download" download="colorized.png" hidden>Download the result</a></p>
<div id="status"></div>
<div id="compare" hidden><img id="before" alt="gray input"><img id="after" alt="colorized">
<input type="range" id="slider" min="0" max="100" value="50" style="width:100%"></div>
<script>
const drop = document.getElementById("drop"), status = document.getElementById("status");
let current = null;
async function run(file) {
  current = file;
  status.textContent = "Colorizing " + file.name + "...";
  const size = document.getElementById("size").value;
  const response = await fetch("/api/colorize?render_size=" + size, {method: "POST", body: file});
  if (!response.ok) {
    status.textContent = "Error: " + (await response.json()).error;
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const gray = await grayscale(file);
  document.getElementById("before").src = gray;
  document.getElementById("after").src = url;
  const link = document.getElementById("download");
  link.href = url; link.hidden = false;
  link.download = file.name.replace(/\\.[^.]*$/, "") + "_colorized.png";
  document.getElementById("compare").hidden = false;
  status.textContent = "Done: left of the line the gray input, right the colours.";
}
function grayscale(file) {
  return new Promise(resolve => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const g = c.getContext("2d"); g.filter = "grayscale(1)"; g.drawImage(img, 0, 0);
      resolve(c.toDataURL());
    };
    img.src = URL.createObjectURL(file);
  });
}
document.getElementById("slider").oninput = e =>
  document.getElementById("after").style.clipPath = "inset(0 0 0 " + e.target.value + "%)";
document.getElementById("file").onchange = e => e.target.files[0] && run(e.target.files[0]);
document.getElementById("size").onchange = () => current && run(current);
drop.ondragover = e => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = e => { e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) run(e.dataTransfer.files[0]); };
</script></body></html>
"""


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
