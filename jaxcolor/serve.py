"""A local web app and HTTP API for a trained colorizer.

  python -m jaxcolor.serve --workdir runs/default      # or --model PATH_OR_URL
      [--host 127.0.0.1] [--port 8000] [--allowed_hosts NAME,...]
      [--max_upload_mb 20] [--max_megapixels 40]

(or `jaxcolor serve ...`; jaxcolor/cli.py starts both and holds the
`--help` text).

The page and the API are jaxcolor/web/app.py's (what each path takes and
answers); this command loads the model and runs the app under uvicorn. It
binds 127.0.0.1 unless told otherwise, and answers only requests whose Host
is one of --allowed_hosts (by default the loopback names and --host): behind
a reverse proxy, name the public host there (docs/deploy.md, "Security").
"""

import asyncio
import dataclasses
import socket
import sys
import threading
from typing import Sequence

import uvicorn
from absl import flags
from uvicorn.protocols.http.h11_impl import H11Protocol

from jaxcolor import cli
from jaxcolor import colorize
from jaxcolor.web import app as app_lib

Limits = app_lib.Limits


class _HeadTimeoutProtocol(H11Protocol):
  """uvicorn's HTTP/1.1 protocol with a deadline on each request's head.

  uvicorn times a connection out only between requests (keep-alive), so a
  client that connects and sends its head a byte a minute would hold the
  connection forever; here the head must arrive within `head_timeout_s` of
  the first byte (or of the connection)."""

  head_timeout_s = 10.0

  def connection_made(self, transport) -> None:
    super().connection_made(transport)
    self._head_timer = None
    self._watch_head()

  def data_received(self, data: bytes) -> None:
    super().data_received(data)
    self._watch_head()

  def _waiting_for_head(self) -> bool:
    return self.cycle is None or self.cycle.response_complete

  def _watch_head(self) -> None:
    if self._waiting_for_head():
      if self._head_timer is None and not self.transport.is_closing():
        self._head_timer = self.loop.call_later(self.head_timeout_s,
                                                self._head_late)
    elif self._head_timer is not None:
      self._head_timer.cancel()
      self._head_timer = None

  def _head_late(self) -> None:
    self._head_timer = None
    if self._waiting_for_head() and not self.transport.is_closing():
      self.transport.close()


@dataclasses.dataclass
class Running:
  """A server running in a thread of this process (tests, notebooks)."""
  server: uvicorn.Server
  thread: threading.Thread
  port: int

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self.port}"

  def stop(self) -> None:
    self.server.should_exit = True
    self.thread.join(timeout=30)


def make_server(app, host: str = "127.0.0.1", port: int = 8000,
                limits: Limits | None = None
                ) -> tuple[uvicorn.Server, socket.socket]:
  """uvicorn serving `app`, and its socket, bound and listening (port 0: a
  free one); `server.run(sockets=[sock])` serves."""
  limits = limits or Limits()
  protocol = type("Protocol", (_HeadTimeoutProtocol,),
                  {"head_timeout_s": limits.header_timeout_s})
  config = uvicorn.Config(
      app, host=host, port=port, http=protocol, lifespan="off",
      log_config=None, log_level="warning", access_log=False,
      server_header=False, backlog=2048,
      limit_concurrency=limits.max_connections, timeout_keep_alive=5,
      h11_max_incomplete_event_size=16 << 10)
  sock = config.bind_socket()
  sock.listen(config.backlog)  # Connections queue from now on, not refused.
  return uvicorn.Server(config), sock


def start(app, host: str = "127.0.0.1", port: int = 0,
          limits: Limits | None = None) -> Running:
  """Serves `app` from a background thread; returns once it listens."""
  server, sock = make_server(app, host, port, limits)
  thread = threading.Thread(
      target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
  thread.start()
  while not server.started and thread.is_alive():
    threading.Event().wait(0.01)
  return Running(server, thread, sock.getsockname()[1])


def allowed_hosts(host: str, extra: Sequence[str]) -> tuple[str, ...]:
  """The Host header values answered: the loopback names, the bound address
  (unless it is a wildcard) and `extra` ('*' among them: any)."""
  names = list(app_lib.LOOPBACK_HOSTS)
  if host not in ("0.0.0.0", "::", ""):
    names.append(host)
  return tuple(dict.fromkeys([*names, *extra]))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    print(f"Error: {cli.program()} takes only flags, not "
          f"{' '.join(argv[1:])}.", file=sys.stderr)
    sys.exit(2)
  FLAGS = flags.FLAGS
  if (FLAGS.workdir is None) == (FLAGS.model is None):
    print("Error: give exactly one of --workdir and --model.", file=sys.stderr)
    sys.exit(2)
  try:
    limits = Limits(max_upload_bytes=FLAGS.max_upload_mb << 20,
                    max_pixels=int(FLAGS.max_megapixels * 1e6),
                    max_pixels_in_flight=max(
                        Limits.max_pixels_in_flight,
                        int(FLAGS.max_megapixels * 1e6)),
                    body_timeout_s=FLAGS.body_timeout,
                    header_timeout_s=FLAGS.header_timeout)
    colorizer = (colorize.Colorizer.from_pretrained(FLAGS.model,
                                                    batch_size=FLAGS.batch_size)
                 if FLAGS.model else colorize.Colorizer.from_workdir(
                     FLAGS.workdir, batch_size=FLAGS.batch_size))
    print("Compiling the network...", file=sys.stderr, flush=True)
    app = app_lib.make_app(colorizer, limits, allowed_hosts=allowed_hosts(
        FLAGS.host, FLAGS.allowed_hosts))
    server, sock = make_server(app, FLAGS.host, FLAGS.port, limits)
  except (FileNotFoundError, ValueError, OSError) as e:
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(2)
  host, port = sock.getsockname()[:2]
  print(f"Serving {colorizer.output!r} on http://{host}:{port}/ "
        "(Ctrl-C stops).", flush=True)
  server.run(sockets=[sock])


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "A training run's directory.")
  flags.DEFINE_string("model", None, "A model artifact (path or URL).")
  flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0: every "
                      "interface; only on a trusted network or behind a "
                      "proxy).")
  flags.DEFINE_integer("port", 8000, "Port (0: any free one).")
  flags.DEFINE_list("allowed_hosts", [], "Host header values to answer "
                    "besides the loopback names and --host, e.g. the public "
                    "name behind a proxy; '*': any.")
  flags.DEFINE_integer("batch_size", 8, "Requests per network call.")
  flags.DEFINE_integer("max_upload_mb", 20, "Largest upload, MiB.",
                       lower_bound=1)
  flags.DEFINE_float("max_megapixels", 40.0, "Largest image, megapixels.",
                     lower_bound=0.01)
  flags.DEFINE_float("body_timeout", Limits.body_timeout_s, "Seconds an "
                     "upload may take to arrive (then 408).", lower_bound=0.1)
  flags.DEFINE_float("header_timeout", Limits.header_timeout_s, "Seconds a "
                     "request's head may take to arrive (then the connection "
                     "is closed).", lower_bound=0.1)


if __name__ == "__main__":
  cli.run("serve", sys.modules[__name__])
