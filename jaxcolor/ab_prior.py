"""`python -m jaxcolor.ab_prior --config FILE[:preset] --workdir DIR`: count
the a*b* bins of the config's training photos into DIR/ab_prior.json, the
prior whose class rebalancing a generator with `ab_bins` trains against
(jaxcolor/training/ab_prior.py, core/ab_bins.py).

A training run with such a generator does this itself at its first step
when DIR has no ab_prior.json; run it first to see or reuse the prior.
"""

import pathlib
import sys

from absl import flags

from jaxcolor.runtime import config_file
from jaxcolor.runtime import job


def _define_flags() -> None:
  config_file.define_flag()
  flags.DEFINE_string("workdir", None, "Run directory that receives "
                      "ab_prior.json (made if absent).")


def main(argv) -> None:
  job.takes_no_arguments(argv)
  from jaxcolor.core.errors import ConfigError  # noqa: PLC0415
  from jaxcolor.training import ab_prior  # noqa: PLC0415
  from jaxcolor.training import experiment  # noqa: PLC0415
  config = job.config()
  system = experiment.build(config, data="train").system
  if not getattr(system, "ab_bins", False):
    raise ConfigError(f"config.generator ({config.generator.name}) does not "
                      "predict a*b* bins: set config.generator.ab_bins=True.")
  workdir = pathlib.Path(flags.FLAGS.workdir)
  path = workdir / ab_prior.FILE_NAME
  if path.exists():
    raise ConfigError(f"{path} exists: delete it to count again.")
  workdir.mkdir(parents=True, exist_ok=True)
  counts = ab_prior.estimate(config, system.bins_factor)
  ab_prior.write(path, counts, dataset=config.dataset,
                 block=system.bins_factor)
  print(f"wrote {path}: {int(counts.sum())} blocks in "
        f"{int((counts > 0).sum())} of {len(counts)} bins")


if __name__ == "__main__":
  job.run("ab_prior", sys.modules[__name__])
