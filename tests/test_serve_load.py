"""A bounded load test of `python -m jaxcolor.serve` on 127.0.0.1.

200 requests from 50 concurrent clients, of mixed photo sizes and aspects,
at the training size and three render sizes, with some bad uploads among
them; meanwhile two slow clients (one trickling its body, one its head) and
a probe that sends one ordinary photo at a time. Every answer must be a 200
or the intended 4xx, no connection reset, the probe answered within
`PROBE_SECONDS`, and the server's peak memory within `RSS_GROWTH_BYTES` of
what it held once warm. The figures it prints are docs/deploy.md's.
"""

import concurrent.futures
import http.client
import io
import json
import pathlib
import socket
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image

import helpers

CLIENTS = 50
REQUESTS = 200
RENDER_SIZES = ("default", "64", "96", "128")
# Stated bounds (docs/deploy.md): generous for a shared 2-core machine, far
# below what an unbounded server reaches (a compile per request, or an
# upload's pixels held by every waiting request).
PROBE_SECONDS = 30.0
RSS_GROWTH_BYTES = 1 << 30


def _rss(pid: int) -> dict[str, int]:
  """{'VmRSS': bytes, 'VmHWM': bytes} of a process (Linux)."""
  fields = {}
  for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
    key, _, value = line.partition(":")
    if key in ("VmRSS", "VmHWM"):
      fields[key] = int(value.split()[0]) * 1024
  return fields


def _photo(width: int, height: int, seed: int) -> bytes:
  rng = np.random.default_rng(seed)
  low = rng.integers(0, 256, (max(height // 16, 1), max(width // 16, 1), 3))
  image = Image.fromarray(low.astype(np.uint8)).resize((width, height))
  out = io.BytesIO()
  image.save(out, format="JPEG", quality=85)
  return out.getvalue()


def _workload() -> list[tuple[bytes, str, int]]:
  """(body, render size, expected status) for each request."""
  shapes = [(144, 96), (96, 144), (200, 200), (320, 120), (64, 64),
            (640, 480)]
  photos = [_photo(w, h, i) for i, (w, h) in enumerate(shapes)]
  strip = _photo(400, 2, 99)
  work = []
  for i in range(REQUESTS):
    if i % 25 == 7:
      work.append((b"not an image at all", "default", 415))
    elif i % 25 == 19:
      work.append((strip, "64", 400))
    else:
      work.append((photos[i % len(photos)], RENDER_SIZES[i % 4], 200))
  return work


def _post(port: int, body: bytes, render_size: str) -> tuple[int, float]:
  start = time.monotonic()
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
  try:
    connection.request("POST", f"/api/colorize?render_size={render_size}",
                       body=body)
    response = connection.getresponse()
    data = response.read()
    if response.status == 200:
      assert data.startswith(b"\x89PNG")
    else:
      assert json.loads(data)["error"]
    return response.status, time.monotonic() - start
  finally:
    connection.close()


def _slow_body(port: int, result: dict) -> None:
  with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
    client.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Length: 50000\r\n\r\n")
    answer = b""
    try:
      for _ in range(100):  # A byte every 0.2 s: 20 s at most.
        client.sendall(b"\xff")
        client.settimeout(0.2)
        try:
          answer += client.recv(4096)
          if answer:
            break
        except TimeoutError:
          pass
    except (BrokenPipeError, ConnectionResetError):
      pass
    result["body"] = answer[:12]


def _slow_head(port: int, result: dict) -> None:
  with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
    start, closed = time.monotonic(), False
    try:
      for byte in b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\n":
        client.sendall(bytes([byte]))
        client.settimeout(0.5)
        try:
          if client.recv(4096) == b"":
            closed = True
            break
        except TimeoutError:
          pass
    except (BrokenPipeError, ConnectionResetError):
      closed = True
    result["head_closed_after_s"] = (time.monotonic() - start) if closed else None


def test_two_hundred_requests_fifty_clients_two_slow(tmp_path):
  run = tmp_path / "run"
  helpers.make_checkpoint(helpers.load_config("configs/default.py"), run,
                          steps=(6,))
  process = subprocess.Popen(
      [sys.executable, "-m", "jaxcolor.serve", f"--workdir={run}", "--port=0",
       "--batch_size=8", "--body_timeout=3", "--header_timeout=3"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = process.stdout.readline()
    assert "on http://127.0.0.1:" in line, process.stderr.read()[-3000:]
    port = int(line.split("127.0.0.1:")[1].split("/")[0])
    work = _workload()
    for size in RENDER_SIZES:  # Warm: one request per render size.
      assert _post(port, work[0][0], size)[0] == 200
    warm = _rss(process.pid)["VmRSS"]

    slow: dict = {}
    slow_threads = [threading.Thread(target=f, args=(port, slow))
                    for f in (_slow_body, _slow_head)]
    probes, stop = [], threading.Event()

    def probe():
      while not stop.is_set():
        probes.append(_post(port, work[0][0], "default"))
        time.sleep(0.5)

    prober = threading.Thread(target=probe)
    start = time.monotonic()
    for thread in [*slow_threads, prober]:
      thread.start()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
      answers = list(pool.map(lambda w: _post(port, w[0], w[1]), work))
    seconds = time.monotonic() - start
    stop.set()
    for thread in [*slow_threads, prober]:
      thread.join(timeout=60)
    memory = _rss(process.pid)
  finally:
    process.terminate()
    stderr = process.communicate(timeout=30)[1]

  statuses = [status for status, _ in answers]
  assert statuses == [expected for _, _, expected in work]  # No reset either.
  assert slow["body"].startswith(b"HTTP/1.1 408"), slow
  assert slow["head_closed_after_s"] is not None, slow
  probe_seconds = max(latency for _, latency in probes)
  assert all(status == 200 for status, _ in probes)
  assert probe_seconds < PROBE_SECONDS
  assert memory["VmHWM"] - warm < RSS_GROWTH_BYTES, (memory, warm)
  assert "Traceback" not in stderr, stderr[-3000:]
  print(f"\n{REQUESTS} requests, {CLIENTS} clients: {seconds:.1f} s "
        f"({REQUESTS / seconds:.1f}/s); latency median "
        f"{np.median([t for _, t in answers]):.2f} s, max "
        f"{max(t for _, t in answers):.2f} s; probe max {probe_seconds:.2f} s "
        f"over {len(probes)}; RSS warm {warm / 2**20:.0f} MiB, peak "
        f"{memory['VmHWM'] / 2**20:.0f} MiB; slow head closed after "
        f"{slow['head_closed_after_s']:.1f} s")
