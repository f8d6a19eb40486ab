"""`python -m jaxcolor.evaluate --config FILE[:preset] --workdir DIR`: score
a run's saved checkpoints on its evaluation photos; never train (also
`jaxcolor evaluate`, and `python -m jaxcolor.main --mode=evaluate`).

Which checkpoints: `--config.evaluation.checkpoints=latest|all|1000,2000`.
The work is jaxcolor/evaluation/checkpoints.py's; jaxcolor/runtime/job.py
starts the job.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from jaxcolor import train  # noqa: E402
from jaxcolor.runtime import job  # noqa: E402

_define_flags = train._define_flags  # The same flags: --config, --workdir, --distributed.


def main(argv) -> None:
  job.takes_no_arguments(argv)
  from jaxcolor.evaluation import checkpoints  # noqa: PLC0415
  checkpoints.run(job.config(), flags.FLAGS.workdir, flags.FLAGS.distributed)


if __name__ == "__main__":
  job.run("evaluate", sys.modules[__name__])
