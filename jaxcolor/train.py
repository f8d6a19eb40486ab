"""`python -m jaxcolor.train --config FILE[:preset] --workdir DIR`: train a
colorizer, or resume a run where it stopped (also `jaxcolor train`, and
`python -m jaxcolor.main`).

Overrides: `--config.batch_size=32 --config.generator.ngf=32`. The work is
jaxcolor/training/loop.py's; jaxcolor/runtime/job.py starts the job (its
--help, config, errors, quiet libraries, compilation cache).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (for TensorBoard) is quiet.

from absl import flags  # noqa: E402

from jaxcolor.runtime import config_file  # noqa: E402
from jaxcolor.runtime import job  # noqa: E402


def _define_flags() -> None:
  config_file.define_flag()
  flags.DEFINE_string(
      "workdir", None, "Run directory: checkpoints, logs, metrics.jsonl, images.")
  flags.DEFINE_bool(
      "distributed", False, "Multi-host: start jax.distributed first (also "
      "JAXCOLOR_DISTRIBUTED=1; see jaxcolor/runtime/distributed.py and "
      "launch/).")


def main(argv) -> None:
  job.takes_no_arguments(argv)
  from jaxcolor.training import loop  # noqa: PLC0415 - imports TensorFlow's protos.
  loop.run(job.config(), flags.FLAGS.workdir, flags.FLAGS.distributed)


if __name__ == "__main__":
  job.run("train", sys.modules[__name__])
