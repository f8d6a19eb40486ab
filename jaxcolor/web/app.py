"""The web app as an ASGI application: the page, the API, and their limits.

  GET  /                      the page: choose, drop or pick an example photo;
                              the gray input and the result side by side
                              under a before/after slider; render size;
                              download
  GET  /static/app.js, /static/app.css, /examples/NAME.jpg
  POST /api/colorize[?render_size=N]
                              the image as the body, or as the one file of a
                              multipart form (`curl -F file=@photo.jpg`);
                              PNG out, same size
  GET  /api/info              the model and the server's limits

Every error is a 4xx with {"error": "one sentence"}: 400 a corrupt image,
a bad render size or a bad Content-Length; 405 a method the path does not
take (with Allow); 408 an upload slower than `Limits.body_timeout_s`; 413 an
upload, an image or a network input over its limit; 415 not an image.

Starlette gives the routing, HEAD, 405s, multipart parsing and the Host
check (`TrustedHostMiddleware`: a page on another site cannot reach this
server by pointing its own name at 127.0.0.1, DNS rebinding); uvicorn
(`jaxcolor/web/server.py`) gives the sockets, a real listen backlog, keep-alive
and connection limits. Ours: what a request may cost (`uploads.py`), the
network input's pixel budget, checked before it reaches the device
(`rendering.rendered`), and the device work (`batcher.Batcher`, which never
compiles on the serving path).
"""

import asyncio
import html
import importlib.resources
import io

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jaxcolor.inference import rendering
from jaxcolor.web import batcher as batcher_lib
from jaxcolor.web import uploads

Limits = uploads.Limits
MAX_RENDER_SIZE = uploads.MAX_RENDER_SIZE

# The render sizes the page offers (besides the training size); the API
# takes any size from the network's size multiple to MAX_RENDER_SIZE.
PAGE_RENDER_SIZES = (256, 384, 512, 768)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
# Example photos on the page: shipped with the package (sample_data/eval;
# their licence is in sample_data/README.md).
EXAMPLES = {
    "jay.jpg": "imagenet_a_n01580077_jay.jpg",
    "strawberries.jpg": "imagenet_b_n07745940_6739_strawberry.jpg",
    "horses.jpg": "bsds_train_113009.jpg",
}


_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_PAGE_POLICY = ("default-src 'self'; img-src 'self' blob: data:; "
                "connect-src 'self' blob:; script-src 'self'; "
                "style-src 'self'; object-src 'none'; "
                "base-uri 'none'; frame-ancestors 'none'")


def _static(name: str) -> bytes:
  return importlib.resources.files("jaxcolor.web").joinpath(
      "static", name).read_bytes()


def _example(name: str) -> bytes:
  return importlib.resources.files("jaxcolor").joinpath(
      "sample_data", "eval", name).read_bytes()


def _error(status: int, message: str, headers: dict | None = None
           ) -> JSONResponse:
  return JSONResponse({"error": message}, status, headers=headers)


class _SecurityHeaders:
  """Adds `_HEADERS` to every response, and a content policy to the page."""

  def __init__(self, app):
    self.app = app

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)

    async def sending(message):
      if message["type"] == "http.response.start":
        headers = list(message.get("headers", []))
        names = {k.lower() for k, _ in headers}
        for key, value in _HEADERS.items():
          if key.lower().encode() not in names:
            headers.append((key.lower().encode(), value.encode()))
        if scope["path"] == "/":
          headers.append((b"content-security-policy", _PAGE_POLICY.encode()))
        message = {**message, "headers": headers}
      await send(message)

    return await self.app(scope, receive, sending)


def page(info: dict) -> str:
  """The page's HTML with the model's description, every field escaped."""
  step = info.get("step")
  model = (f"{info.get('system')} ({info.get('output')}, "
           f"{'step ' + str(step) if isinstance(step, int) else 'unknown step'}"
           f", trained at {info.get('image_size')} px)")
  sizes = "".join(f'<option value="{s}">{s} px</option>'
                  for s in info["render_sizes"])
  examples = "".join(
      f'<button type="button" class="example" data-src="/examples/{html.escape(n)}">'
      f'<img src="/examples/{html.escape(n)}" alt="example photo {i + 1}"></button>'
      for i, n in enumerate(EXAMPLES))
  return (_static("index.html").decode()
          .replace("__MODEL__", html.escape(model))
          .replace("__SIZES__", sizes)
          .replace("__EXAMPLES__", examples))


def make_app(colorizer, limits: uploads.Limits | None = None, *,
             allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS,
             warm: bool = True) -> Starlette:
  """The ASGI app serving `colorizer` (a `jaxcolor.colorize.Colorizer`).

  `allowed_hosts`: the Host header values answered ('*': any; behind a
  proxy, the public name). `warm`: compile the training-size program now,
  so the first request does not wait for it.
  """
  limits = limits or uploads.Limits()
  if colorizer.render_size is not None:
    raise ValueError("serve the colorizer at its training size; render "
                     "sizes are chosen per request.")
  multiple = colorizer.with_render_size(MAX_RENDER_SIZE).multiple
  batcher = batcher_lib.Batcher(colorizer, capacity=limits.programs)
  square = (colorizer.image_size, colorizer.image_size, 3)
  if warm:
    batcher.warm(square)
  step = colorizer.step
  info = {
      "system": str(colorizer.system.config.system),
      "output": str(colorizer.output),
      "step": int(step) if isinstance(step, int) else None,
      "image_size": int(colorizer.image_size),
      "render_sizes": [s for s in PAGE_RENDER_SIZES if s % multiple == 0],
      "min_render_size": multiple,
      "max_render_size": MAX_RENDER_SIZE,
      "max_upload_bytes": limits.max_upload_bytes,
      "max_pixels": limits.max_pixels,
  }
  page_html = page(info).encode()
  budget = uploads.PixelBudget(limits.max_pixels_in_flight)

  def prepare(image: Image.Image, render_size: int | None):
    if render_size is None:
      size = colorizer.image_size
      return rendering.squeezed(image, size), (size, size)
    # Long sides padded to a quarter of the render size: a handful of
    # shapes, so of programs, per render size whatever the photos' aspects.
    step = max(multiple, render_size // 4 // multiple * multiple)
    try:
      return rendering.rendered(image, render_size, multiple, step=step,
                               max_pixels=limits.max_network_pixels)
    except rendering.NetworkInputTooLarge as e:
      raise HTTPException(413, str(e)) from None
    except ValueError as e:
      raise HTTPException(400, str(e)) from None

  def finish(image: Image.Image, ab, crop) -> bytes:
    rgb = colorizer.recombine(image, ab[:crop[0], :crop[1]])
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG",
                              compress_level=rendering.PNG_COMPRESS_LEVEL)
    return out.getvalue()

  async def colorize_endpoint(request: Request) -> Response:
    render_size = uploads.render_size_of(
        request.query_params.get("render_size", ""), multiple)
    data = await uploads.image_bytes(request, limits)
    width, height = await run_in_threadpool(uploads.image_size_of, data,
                                            limits)
    # Reserved before decoding, returned when the answer is encoded.
    pixels = min(width * height, budget.total)
    await budget.acquire(pixels)
    try:
      image = await run_in_threadpool(uploads.decode, data, limits)
      del data
      array, crop = await run_in_threadpool(prepare, image, render_size)
      ab = await asyncio.wrap_future(batcher.submit(array))
      png = await run_in_threadpool(finish, image, ab, crop)
    finally:
      await budget.release(pixels)
    return Response(png, media_type="image/png")

  async def page_endpoint(request: Request) -> Response:
    return Response(page_html, media_type="text/html; charset=utf-8")

  async def info_endpoint(request: Request) -> Response:
    return JSONResponse(info)

  def static(name: str, kind: str):
    body = _static(name)

    async def endpoint(request: Request) -> Response:
      return Response(body, media_type=kind)
    return endpoint

  examples = {name: _example(file) for name, file in EXAMPLES.items()}

  async def example_endpoint(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in examples:
      raise HTTPException(404, f"no example {name[:40]!r}.")
    return Response(examples[name], media_type="image/jpeg")

  async def http_error(request: Request, exc: HTTPException) -> Response:
    message = exc.detail
    if exc.status_code == 405:
      allowed = sorted((exc.headers or {}).get("Allow", "GET").split(", "))
      message = (f"{request.method} is not allowed on {request.url.path}; "
                 f"use {' or '.join(allowed)}.")
    elif exc.status_code == 404 and message == "Not Found":
      message = f"no page {request.url.path[:80]}."
    return _error(exc.status_code, message, exc.headers)

  async def server_error(request: Request, exc: Exception) -> Response:
    return _error(500, f"the colorizer failed: {type(exc).__name__}.")

  hosts = list(allowed_hosts)
  app = Starlette(
      routes=[
          Route("/", page_endpoint, methods=["GET"]),
          Route("/static/app.js", static("app.js", "text/javascript"),
                methods=["GET"]),
          Route("/static/app.css", static("app.css", "text/css"),
                methods=["GET"]),
          Route("/examples/{name}", example_endpoint, methods=["GET"]),
          Route("/api/info", info_endpoint, methods=["GET"]),
          Route("/api/colorize", colorize_endpoint, methods=["POST"]),
      ],
      middleware=[Middleware(_SecurityHeaders),
                  Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
      exception_handlers={HTTPException: http_error, Exception: server_error})
  app.state.batcher, app.state.info, app.state.limits = batcher, info, limits
  return app
