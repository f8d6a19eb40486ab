"""The web app's server: uvicorn with a deadline on each request's head, on
a socket bound before serving, and the serve job that runs it.

The server binds 127.0.0.1 unless told otherwise; the page, the API and
their limits are jaxcolor/web/app.py's (what each path takes and answers).
The command is jaxcolor/serve.py.
"""

import asyncio
import dataclasses
import socket
import sys
import threading
from typing import Sequence

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from jaxcolor.core.errors import JobError
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.inference import shipped_model
from jaxcolor.web import app as app_lib

Limits = app_lib.Limits


class ServeError(JobError):
  """A serve command that cannot name its model."""


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


def serve(*, workdir: str | None, model: str | None, host: str, port: int,
          allowed: Sequence[str], batch_size: int, limits: Limits,
          upsample: str = "bilinear") -> None:
  """The serve job (`jaxcolor serve`): loads the colorizer of a run or an
  artifact, compiles it, and serves the app until Ctrl-C.

  Raises:
    ServeError: both `workdir` and `model` (neither: the shipped model,
      jaxcolor/inference/shipped_model.py). The colorizer's
      own errors (ConfigError, ArtifactError) and the socket's (OSError)
      pass on: each names what failed.
  """
  if workdir is not None and model is not None:
    raise ServeError("give one of --workdir and --model, not both; with "
                     "neither, the shipped model serves.")
  if workdir is None and model is None:
    print(shipped_model.notice(), file=sys.stderr)
    model = str(shipped_model.directory())
  colorizer = (colorizer_lib.Colorizer.from_pretrained(model,
                                                       batch_size=batch_size)
               if model else colorizer_lib.Colorizer.from_workdir(
                   workdir, batch_size=batch_size)).with_upsample(upsample)
  print("Compiling the network...", file=sys.stderr, flush=True)
  app = app_lib.make_app(colorizer, limits,
                         allowed_hosts=allowed_hosts(host, allowed))
  server, sock = make_server(app, host, port, limits)
  bound_host, bound_port = sock.getsockname()[:2]
  print(f"Serving {colorizer.output!r} on http://{bound_host}:{bound_port}/ "
        "(Ctrl-C stops).", flush=True)
  server.run(sockets=[sock])


def limits_for(max_upload_mb: int, max_megapixels: float, body_timeout: float,
               header_timeout: float) -> Limits:
  """The app's limits from the command's flags."""
  return Limits(max_upload_bytes=max_upload_mb << 20,
                max_pixels=int(max_megapixels * 1e6),
                max_pixels_in_flight=max(Limits.max_pixels_in_flight,
                                         int(max_megapixels * 1e6)),
                body_timeout_s=body_timeout, header_timeout_s=header_timeout)
