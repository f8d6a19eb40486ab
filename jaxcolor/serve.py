"""`python -m jaxcolor.serve --workdir RUN` (or `--model PATH_OR_URL`): a
local web app and HTTP API for a trained colorizer (also `jaxcolor serve`).

  python -m jaxcolor.serve --workdir runs/default      # or --model PATH_OR_URL
      [--host 127.0.0.1] [--port 8000] [--allowed_hosts NAME,...]
      [--max_upload_mb 20] [--max_megapixels 40]

It binds 127.0.0.1 unless told otherwise, and answers only requests whose
Host is one of --allowed_hosts (by default the loopback names and --host):
behind a reverse proxy, name the public host there (docs/deploy.md,
"Security"). The page and the API are jaxcolor/web/app.py's; the server,
jaxcolor/web/server.py's.
"""

import sys

from absl import flags

from jaxcolor.runtime import job
from jaxcolor.web import server
from jaxcolor.web.server import Limits


def main(argv) -> None:
  job.takes_no_arguments(argv)
  F = flags.FLAGS
  server.serve(workdir=F.workdir, model=F.model, host=F.host, port=F.port,
               allowed=F.allowed_hosts, batch_size=F.batch_size,
               upsample=F.upsample,
               limits=server.limits_for(F.max_upload_mb, F.max_megapixels,
                                        F.body_timeout, F.header_timeout))


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "A training run's directory.")
  flags.DEFINE_string("model", None, "A model artifact (path or URL).")
  flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0: every "
                      "interface; only on a trusted network or behind a "
                      "proxy).")
  flags.DEFINE_integer("port", 8000, "Port (0: any free one).")
  flags.DEFINE_enum("upsample", "bilinear", ["bilinear", "guided"],
                    "How the a*b* reach the photo's size: bilinear, or "
                    "guided by the photo's own L*.")
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
  job.run("serve", sys.modules[__name__])
