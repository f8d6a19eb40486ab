r"""The web server's peak memory under many large photos at once.

  python benchmarks/serve_memory.py --workdir RUN [--clients 20] \
      [--megapixels 36] [--max_megapixels 40]

Starts `python -m jaxcolor.serve` on 127.0.0.1 (default limits unless
given), sends `--clients` simultaneous uploads of one JPEG of
`--megapixels` (smooth noise, square), and prints the statuses, the wall
time and the server's RSS when warm and at its peak (`VmHWM`, Linux): the
figure that `Limits.max_pixels_in_flight` bounds (docs/deploy.md,
"Security").
"""

import argparse
import concurrent.futures
import http.client
import io
import math
import pathlib
import subprocess
import sys
import time

import numpy as np
from PIL import Image


def _rss_mib(pid: int, key: str) -> float:
  for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
    if line.startswith(key + ":"):
      return int(line.split()[1]) / 1024
  raise KeyError(key)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--clients", type=int, default=20)
  parser.add_argument("--megapixels", type=float, default=36.0)
  parser.add_argument("--max_megapixels", type=float, default=40.0)
  args = parser.parse_args()

  side = int(math.sqrt(args.megapixels * 1e6))
  noise = np.random.default_rng(0).integers(0, 256, (60, 60, 3))
  out = io.BytesIO()
  Image.fromarray(noise.astype(np.uint8)).resize((side, side)).save(
      out, format="JPEG", quality=80)
  body = out.getvalue()

  server = subprocess.Popen(
      [sys.executable, "-m", "jaxcolor.serve", f"--workdir={args.workdir}",
       "--port=0", f"--max_megapixels={args.max_megapixels}",
       f"--max_upload_mb={max(20, (len(body) >> 20) + 1)}"],
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    line = server.stdout.readline()
    port = int(line.split("127.0.0.1:")[1].split("/")[0])
    warm = _rss_mib(server.pid, "VmRSS")

    def post(_):
      connection = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
      connection.request("POST", "/api/colorize", body=body)
      response = connection.getresponse()
      response.read()
      return response.status

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
      statuses = list(pool.map(post, range(args.clients)))
    seconds = time.monotonic() - start
    peak = _rss_mib(server.pid, "VmHWM")
  finally:
    server.terminate()
    server.wait(timeout=60)
  print(f"{args.clients} clients x {side} x {side} ({len(body) / 1e6:.1f} MB "
        f"JPEG): statuses {sorted(set(statuses))}, {seconds:.1f} s; RSS warm "
        f"{warm:,.0f} MiB, peak {peak:,.0f} MiB")


if __name__ == "__main__":
  main()
