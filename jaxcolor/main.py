"""Entry point: `python -m jaxcolor.main --config FILE[:preset] --workdir DIR
[--mode=train|evaluate]`.

The README's form of `jaxcolor train` (jaxcolor/train.py) and, with
`--mode=evaluate`, of `jaxcolor evaluate` (jaxcolor/evaluate.py): the same
flags, the same job.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from jaxcolor import evaluate  # noqa: E402
from jaxcolor import train  # noqa: E402
from jaxcolor.runtime import job  # noqa: E402


def _define_flags() -> None:
  train._define_flags()
  flags.DEFINE_enum(
      "mode", "train", ["train", "evaluate"],
      "train: train (resuming from the newest checkpoint); evaluate: score the "
      "workdir's checkpoints (config.evaluation.checkpoints), never train.")


def main(argv) -> None:
  (evaluate if flags.FLAGS.mode == "evaluate" else train).main(argv)


if __name__ == "__main__":
  job.run("train", sys.modules[__name__], prog="python -m jaxcolor.main")
