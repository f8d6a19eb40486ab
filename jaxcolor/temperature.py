"""`python -m jaxcolor.temperature --workdir RUN [--checkpoint N]`: choose
the annealed-mean temperature of a run that predicts a*b* bins on its own
held-out split, into RUN/temperature.json, which colorize, export and serve
then use (jaxcolor/evaluation/temperature.py has the rule).
"""

import sys

from absl import flags

from jaxcolor.runtime import job


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The training run.")
  flags.DEFINE_integer("checkpoint", None, "Its checkpoint (default: newest).")


def main(argv) -> None:
  job.takes_no_arguments(argv)
  from jaxcolor.evaluation import temperature  # noqa: PLC0415
  record = temperature.choose(flags.FLAGS.workdir, flags.FLAGS.checkpoint)
  for row in record["scores"]:
    print(f"T={row['temperature']:<5} PSNR {row['psnr']:.2f} dB "
          f"(gray {row['gray_psnr']:.2f})  colorfulness "
          f"{100 * row['colorfulness_share']:.0f} % of the truth's")
  print(f"chosen: T={record['temperature']} -> {flags.FLAGS.workdir}/"
        "temperature.json")


if __name__ == "__main__":
  job.run("temperature", sys.modules[__name__])
