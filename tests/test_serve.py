"""The web app's API against a running server on 127.0.0.1: concurrent
requests batched and none lost, every bad upload a clear 4xx, and the server
still serving after each."""

import concurrent.futures
import http.client
import io
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import helpers
from jaxcolor import colorize
from jaxcolor import serve

SAMPLE = helpers.REPO / "jaxcolor" / "sample_data" / "eval"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  run = tmp_path_factory.mktemp("serve") / "run"
  helpers.make_checkpoint(helpers.load_config("configs/default.py"), run,
                          steps=(6,))
  colorizer = colorize.Colorizer.from_workdir(run, batch_size=4)
  httpd = serve.make_server(colorizer, "127.0.0.1", 0, serve.Limits(
      max_upload_bytes=2 << 20, max_pixels=4_000_000))
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield httpd.server_address[1], colorizer
  httpd.shutdown()
  httpd.server_close()


def _post(port, body: bytes, query: str = "", headers=None):
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
  connection.request("POST", "/api/colorize" + query, body=body,
                     headers=headers or {})
  response = connection.getresponse()
  data = response.read()
  connection.close()
  return response.status, response.getheader("Content-Type"), data


def _jpeg(path) -> bytes:
  return path.read_bytes()


def test_page_and_info(server):
  port, _ = server
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  connection.request("GET", "/")
  page = connection.getresponse().read().decode()
  assert "/api/colorize" in page and 'type="range"' in page
  connection.request("GET", "/api/info")
  info = json.loads(connection.getresponse().read())
  assert info["output"] == "generator_ema" and info["image_size"] == 32


def test_concurrent_requests_all_come_back_colorized(server):
  port, colorizer = server
  photos = sorted(SAMPLE.glob("*.jpg"))[:6]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    replies = list(pool.map(lambda p: _post(port, _jpeg(p)), photos * 2))
  for photo, (status, kind, data) in zip(photos * 2, replies):
    assert status == 200 and kind == "image/png"
    rgb = np.asarray(Image.open(io.BytesIO(data)))
    truth = Image.open(photo)
    assert rgb.shape == (truth.height, truth.width, 3)
    np.testing.assert_array_equal(rgb, colorizer.colorize(truth))
  status, _, data = _post(port, _jpeg(photos[0]), "?render_size=64")
  assert status == 200
  assert Image.open(io.BytesIO(data)).size == Image.open(photos[0]).size


def _bomb() -> bytes:
  out = io.BytesIO()
  Image.new("1", (8000, 8000)).save(out, format="PNG")  # 64 MP, ~8 kB.
  return out.getvalue()


@pytest.mark.parametrize("body,query,status,message", [
    (b"x" * (3 << 20), "", 413, "over the limit of 2,097,152"),
    (_bomb(), "", 413, "8000 x 8000 pixels is over the limit"),
    (b"this is a text file", "", 415, "not an image"),
    ((SAMPLE / "bsds_test_140006.jpg").read_bytes()[:4000], "", 400,
     "truncated or corrupt"),
    ((SAMPLE / "bsds_test_140006.jpg").read_bytes(), "?render_size=big", 400,
     "render_size='big'"),
    ((SAMPLE / "bsds_test_140006.jpg").read_bytes(), "?render_size=8", 400,
     "render_size=8: this network needs at least 32"),
])
def test_bad_uploads_are_4xx_and_the_server_keeps_serving(server, body, query,
                                                          status, message):
  port, _ = server
  got, kind, data = _post(port, body, query)
  assert got == status and kind == "application/json"
  assert message in json.loads(data)["error"]
  ok, _, _ = _post(port, _jpeg(SAMPLE / "bsds_test_140006.jpg"))
  assert ok == 200


def test_a_content_length_that_is_no_number_is_named(server):
  port, _ = server
  got, kind, data = _post(port, b"", headers={"Content-Length": "lots"})
  assert got == 400 and kind == "application/json"
  assert "Content-Length 'lots' is not a byte count" in json.loads(data)["error"]
  ok, _, _ = _post(port, _jpeg(SAMPLE / "bsds_test_140006.jpg"))
  assert ok == 200


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
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/api/info")
    assert json.loads(connection.getresponse().read())["step"] == 6
  finally:
    process.terminate()
    process.wait(timeout=30)
