"""`python -m jaxcolor.score --truth photos/ --predictions colorized/`: score
any colorizer's saved outputs against the true photos, beside the gray
baseline (also `jaxcolor score`).

  python -m jaxcolor.score --truth photos/ --predictions colorized/ \\
      [--output results.json] [--csv per_image.csv]

How photos are paired and scored: jaxcolor/evaluation/scoring.py, which
does the work.
"""

import sys

from absl import flags

from jaxcolor.evaluation import scoring
from jaxcolor.runtime import job


def main(argv) -> None:
  job.takes_no_arguments(argv)
  F = flags.FLAGS
  sys.exit(scoring.run(F.truth, F.predictions, F.output, F.csv))


def _define_flags() -> None:

  flags.DEFINE_string("truth", None, "Folder of the true color photos.")
  flags.DEFINE_string("predictions", None, "Folder of the colorized photos.")
  flags.DEFINE_string("output", None, "JSON file for the results.")
  flags.DEFINE_string("csv", None, "CSV file, one row per scored photo.")


if __name__ == "__main__":
  job.run("score", sys.modules[__name__])
