"""The web app against a live server on 127.0.0.1 (uvicorn in a thread):
concurrent requests batched and none lost, every bad or hostile request a
clear 4xx, the server still serving after each; and the batcher's promise
that a compilation never holds up requests for shapes already compiled."""

import concurrent.futures
import http.client
import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

import helpers
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.web import app as app_lib
from jaxcolor.web import batcher as batcher_lib
from jaxcolor.web import server as server_lib

SAMPLE = helpers.REPO / "jaxcolor" / "sample_data" / "eval"
PHOTO = SAMPLE / "bsds_test_140006.jpg"


@pytest.fixture(scope="module")
def colorizer(tmp_path_factory):
  run = tmp_path_factory.mktemp("serve") / "run"
  helpers.make_checkpoint(helpers.load_config("configs/default.py"), run,
                          steps=(6,))
  return colorizer_lib.Colorizer.from_workdir(run, batch_size=4)


LIMITS = app_lib.Limits(max_upload_bytes=2 << 20, max_pixels=4_000_000,
                        max_network_pixels=64 * 256, body_timeout_s=1.5,
                        header_timeout_s=1.5)


@pytest.fixture(scope="module")
def app(colorizer):
  return app_lib.make_app(colorizer, LIMITS)


@pytest.fixture(scope="module")
def server(app, colorizer):
  running = server_lib.start(app, limits=LIMITS)
  yield running.port, colorizer
  running.stop()


def _request(port, method, path, body=None, headers=None):
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
  connection.request(method, path, body=body, headers=headers or {})
  response = connection.getresponse()
  data = response.read()
  connection.close()
  return response.status, response, data


def _post(port, body: bytes, query: str = "", headers=None):
  status, response, data = _request(port, "POST", "/api/colorize" + query,
                                    body, headers)
  return status, response.getheader("Content-Type"), data


def _png_header(width: int, height: int) -> bytes:
  """A PNG that claims `width` x `height` 8-bit gray pixels: its header
  alone, as a decompression bomb's, with one tiny compressed row."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))
  header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
          + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
          + chunk(b"IEND", b""))


def _encoded(array, file_format="PNG") -> bytes:
  out = io.BytesIO()
  Image.fromarray(array).save(out, format=file_format)
  return out.getvalue()


def test_page_info_and_headers(server):
  port, _ = server
  status, response, page = _request(port, "GET", "/")
  assert status == 200 and b"/static/app.js" in page
  assert b"<title>jaxcolor: colorize a black-and-white photo</title>" in page
  assert response.getheader("X-Content-Type-Options") == "nosniff"
  assert response.getheader("Cache-Control") == "no-store"
  assert "script-src 'self'" in response.getheader("Content-Security-Policy")
  assert response.getheader("Server") is None
  status, _, info = _request(port, "GET", "/api/info")
  info = json.loads(info)
  assert info["output"] == "generator_ema" and info["image_size"] == 32
  assert info["step"] == 6 and info["min_render_size"] == 32
  for path in ("/static/app.js", "/static/app.css", "/examples/jay.jpg"):
    assert _request(port, "GET", path)[0] == 200, path
  status, _, data = _request(port, "GET", "/examples/..%2f..%2fserve.py")
  assert status == 404 and "no page" in json.loads(data)["error"]
  status, _, data = _request(port, "GET", "/examples/serve.py")
  assert status == 404 and "no example" in json.loads(data)["error"]


def test_model_fields_are_escaped_in_the_page(colorizer):
  hostile = "</title><script>alert(1)</script>"
  html = app_lib.page({"system": hostile, "output": hostile, "step": hostile,
                       "image_size": hostile, "render_sizes": [256]})
  assert "<script>alert" not in html and "&lt;/title&gt;" in html
  assert "unknown step" in html  # A step that is no number is not shown.
  other = type(colorizer).__new__(type(colorizer))
  other.__dict__.update(colorizer.__dict__, step=hostile)
  app = app_lib.make_app(other, LIMITS, warm=False)
  assert app.state.info["step"] is None


@pytest.mark.parametrize("method,path,status,allow", [
    ("HEAD", "/", 200, None),
    ("HEAD", "/api/info", 200, None),
    ("GET", "/api/colorize", 405, "POST"),
    ("PUT", "/api/colorize", 405, "POST"),
    ("DELETE", "/", 405, "GET, HEAD"),
    ("GET", "/nowhere", 404, None),
])
def test_methods_and_paths(server, method, path, status, allow):
  port, _ = server
  got, response, data = _request(port, method, path)
  assert got == status
  if allow:
    assert (sorted(response.getheader("Allow").split(", "))
            == sorted(allow.split(", ")))
    assert f"{method} is not allowed on {path}" in json.loads(data)["error"]
  if method == "HEAD":
    assert data == b"" and int(response.getheader("Content-Length")) > 0


def test_another_host_name_is_refused(server):
  """DNS rebinding: a page on evil.example resolving to 127.0.0.1."""
  port, _ = server
  status, _, _ = _request(port, "GET", "/api/info",
                          headers={"Host": "evil.example"})
  assert status == 400
  assert _request(port, "GET", "/api/info",
                  headers={"Host": f"localhost:{port}"})[0] == 200


def test_concurrent_requests_all_come_back_colorized(server):
  port, colorizer = server
  photos = sorted(SAMPLE.glob("*.jpg"))[:6]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    replies = list(pool.map(lambda p: _post(port, p.read_bytes()), photos * 2))
  for photo, (status, kind, data) in zip(photos * 2, replies):
    assert status == 200 and kind == "image/png"
    rgb = np.asarray(Image.open(io.BytesIO(data)))
    truth = Image.open(photo)
    assert rgb.shape == (truth.height, truth.width, 3)
    np.testing.assert_array_equal(rgb, colorizer.colorize(truth))
  status, _, data = _post(port, photos[0].read_bytes(), "?render_size=64")
  assert status == 200
  assert Image.open(io.BytesIO(data)).size == Image.open(photos[0]).size


def test_a_multipart_form_upload_is_read(server):
  port, colorizer = server
  boundary = "jaxcolorboundary"
  body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
          "filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
          ).encode() + PHOTO.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
  kind = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
  status, _, data = _post(port, body, headers=kind)
  assert status == 200
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))),
                                colorizer.colorize(Image.open(PHOTO)))
  field = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"x\"\r\n"
           f"\r\nhello\r\n--{boundary}--\r\n").encode()
  status, _, data = _post(port, field, headers=kind)
  assert status == 400 and "no file" in json.loads(data)["error"]


_JPEG = PHOTO.read_bytes()


@pytest.mark.parametrize("body,query,status,message", [
    (b"x" * (3 << 20), "", 413, "over the limit of 2,097,152"),
    (_png_header(20000, 20000), "", 413,
     "the image is over the limit of 4,000,000 pixels"),
    (_png_header(2001, 2000), "", 413,
     "2001 x 2000 pixels: the image is over the limit of 4,000,000"),
    (_png_header(400, 1), "?render_size=64", 400, "an aspect past 32:1"),
    (_encoded(np.zeros((40, 90, 3), np.uint8)), "?render_size=256", 413,
     "network pixels, over the limit of 16,384"),
    (b"this is a text file", "", 415, "not an image"),
    (b"", "", 400, "an empty file"),
    (_JPEG[:4000], "", 400, "a damaged or truncated image"),
    (_JPEG, "?render_size=big", 400, "render_size='big'"),
    (_JPEG, "?render_size=8", 400, "render_size=8: between 32 and 2048"),
])
def test_bad_uploads_are_4xx_and_the_server_keeps_serving(server, body, query,
                                                          status, message):
  port, _ = server
  got, kind, data = _post(port, body, query)
  assert got == status and kind == "application/json"
  assert message in json.loads(data)["error"]
  ok, _, _ = _post(port, _JPEG)
  assert ok == 200


def test_a_malformed_request_is_400_and_the_server_keeps_serving(server):
  """h11 refuses a Content-Length that is no number before the app sees it."""
  port, _ = server
  with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
    client.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Length: lots\r\n\r\n")
    assert client.recv(4096).startswith(b"HTTP/1.1 400")
  assert _post(port, _JPEG)[0] == 200


def test_slow_clients_are_cut_off(server):
  """A body that never finishes gets a 408; a head that never finishes is
  closed; meanwhile the server answers others."""
  port, _ = server
  body = socket.create_connection(("127.0.0.1", port))
  body.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Length: 100000\r\n\r\n" + _JPEG[:100])
  head = socket.create_connection(("127.0.0.1", port))
  head.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: 127.")
  start = time.monotonic()
  assert _post(port, _JPEG)[0] == 200
  body.settimeout(10)
  head.settimeout(10)
  answer = b""
  while b"}" not in answer:  # The head and the JSON may come apart.
    chunk = body.recv(4096)
    assert chunk, answer
    answer += chunk
  assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
  assert b"did not arrive within 1.5 s" in answer
  assert head.recv(4096) == b""  # Closed without an answer.
  assert time.monotonic() - start < 8
  body.close()
  head.close()


def test_a_failing_network_is_a_500_with_its_error_named(server, app):
  """The connection gets an answer, and the server goes on serving."""
  port, _ = server
  original = app.state.batcher.submit

  def failing(array):
    future = concurrent.futures.Future()
    future.set_exception(RuntimeError("device lost"))
    return future

  app.state.batcher.submit = failing
  try:
    status, kind, data = _post(port, _JPEG)
  finally:
    app.state.batcher.submit = original
  assert status == 500 and kind == "application/json"
  assert json.loads(data)["error"] == "the colorizer failed: RuntimeError."
  assert _post(port, _JPEG)[0] == 200


class _FakeColorizer:
  """Compiles instantly, except shapes in `blocked` until `release` is set."""

  batch_size = 2
  arrays = {}

  def __init__(self, blocked):
    self.blocked, self.release = blocked, threading.Event()

  def lowered(self, abstract):
    fake = self

    class Lowered:
      def compile(self):
        if abstract.shape[1:] in fake.blocked:
          fake.release.wait(30)
        return lambda arrays, batch: np.full(batch.shape[:3] + (2,),
                                             batch.shape[1], np.float32)
    return Lowered()


def test_a_compilation_never_holds_up_compiled_shapes():
  fake = _FakeColorizer(blocked={(8, 8, 3)})
  batcher = batcher_lib.Batcher(fake, capacity=2)
  batcher.warm((4, 4, 3))
  waiting = batcher.submit(np.zeros((8, 8, 3), np.uint8))
  answered = [batcher.submit(np.zeros((4, 4, 3), np.uint8)) for _ in range(5)]
  for future in answered:  # While the 8 x 8 program is still compiling.
    assert future.result(timeout=10)[0, 0, 0] == 4
  assert not waiting.done()
  fake.release.set()
  assert waiting.result(timeout=10).shape == (8, 8, 2)


def test_compiled_programs_are_bounded():
  fake = _FakeColorizer(blocked=set())
  batcher = batcher_lib.Batcher(fake, capacity=2)
  for size in (4, 6, 8, 4):
    batcher.submit(np.zeros((size, size, 3), np.uint8)).result(timeout=10)
  assert batcher.held() == 2
  assert batcher.compilations == 4  # The 4 x 4 program was dropped, redone.


def test_command_line_serves_on_localhost(tmp_path):
  run = tmp_path / "run"
  helpers.make_checkpoint(helpers.load_config("configs/default.py"), run,
                          steps=(6,))
  process = subprocess.Popen(
      [sys.executable, "-m", "jaxcolor.serve", f"--workdir={run}", "--port=0"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = process.stdout.readline()  # "Serving 'generator_ema' on http://..."
    assert "on http://127.0.0.1:" in line, (line, process.stderr.read()[-2000:]
                                             if process.poll() is not None else "")
    port = int(line.split("127.0.0.1:")[1].split("/")[0])
    status, _, info = _request(port, "GET", "/api/info")
    assert status == 200 and json.loads(info)["step"] == 6
  finally:
    process.terminate()
    process.wait(timeout=30)
