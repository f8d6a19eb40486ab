"""The annealed-mean temperature of a run that predicts a*b* bins, chosen
on the run's own held-out split (never on a test split).

Zhang et al. (2016, sec. 2.3) set T = 0.38 by eye, between the mean of the
predicted distribution (T = 1: right on average, brown) and its mode
(T -> 0: vivid, patchy). Here each of `TEMPERATURES` colorizes the run's
evaluation split with the newest checkpoint (or one named), and the rule
picks:

  the most colorful temperature whose PSNR is at least the gray
  baseline's; if none is, the one with the best PSNR.

It is the rule configs/cpu_budget.py's step count was chosen by: colour,
as long as it is not worse than no colour. (A first rule, the best PSNR
among colorfulness 80-120 % of the truth's, chose T = 0.1 for a run whose
only in-band temperature lost 3 dB to gray on its held-out photos:
docs/results.md.) The choice and every temperature's scores go to
WORKDIR/temperature.json, which the colorizer and export read
(`RunDir.read_temperature`).
"""

import copy
from typing import Any

from absl import logging

from jaxcolor import data
from jaxcolor.core.errors import ConfigError
from jaxcolor.evaluation import evaluator as evaluator_lib
from jaxcolor.training import checkpointing
from jaxcolor.training import experiment as experiment_lib
from jaxcolor.training import rundir as rundir_lib

TEMPERATURES = (1.0, 0.77, 0.58, 0.46, 0.38, 0.29, 0.2, 0.1)
RULE = ("the most colorful temperature whose held-out PSNR is at least the "
        "gray baseline's; if none, the best PSNR")


def pick(rows: list[dict[str, float]]) -> dict[str, float]:
  """The row the module docstring's rule picks from rows with
  'temperature', 'psnr', 'gray_psnr' and 'colorfulness_share'."""
  above = [r for r in rows if r["psnr"] >= r["gray_psnr"]]
  if above:
    return max(above, key=lambda r: r["colorfulness_share"])
  return max(rows, key=lambda r: r["psnr"])


def choose(workdir: str, checkpoint: int | None = None,
           temperatures=TEMPERATURES) -> dict[str, Any]:
  """Scores `temperatures` on the run's held-out split, writes and returns
  temperature.json's record.

  Raises:
    ConfigError: not a run whose generator predicts a*b* bins, or no
      checkpoint (at `checkpoint`).
  """
  run_dir = rundir_lib.RunDir(workdir)
  config = run_dir.read_config()
  if not ("ab_bins" in config.generator and config.generator.ab_bins):
    raise ConfigError(f"{run_dir.config_path}: its generator does not "
                      "predict a*b* bins (config.generator.ab_bins).")
  checkpointer = checkpointing.Checkpointer(run_dir.checkpoint_dir, keep=1,
                                            asynchronous=False)
  try:
    steps = checkpointer.all_steps()
    step = checkpoint if checkpoint is not None else max(steps, default=None)
    if step is None or step not in steps:
      raise ConfigError(f"No checkpoint {'at ' + str(step) + ' ' if step else ''}"
                        f"in {checkpointer.directory}.")
    rows = []
    for temperature in temperatures:
      trial = copy.deepcopy(config)
      trial.generator.bins_temperature = float(temperature)
      experiment = experiment_lib.build(trial, data="eval")
      # Restored for each: a state's train states hold their system's
      # optimizer, so one system's state does not fit another's programs.
      state = experiment.restore(checkpointer, step)
      rows.append(_score(experiment, state, temperature))
      logging.info("temperature %.2f: PSNR %.2f dB (gray %.2f), colorfulness "
                   "%.0f %% of the truth's", temperature, rows[-1]["psnr"],
                   rows[-1]["gray_psnr"], 100 * rows[-1]["colorfulness_share"])
  finally:
    checkpointer.close()
  best = pick(rows)
  record = {"temperature": best["temperature"], "checkpoint": step,
            "dataset": data.eval_dataset_of(config),
            "rule": RULE,
            "scores": rows}
  run_dir.write_temperature(record)
  return record


def _score(experiment: experiment_lib.Experiment, state: Any,
           temperature: float) -> dict[str, float]:
  config = experiment.config
  evaluator = evaluator_lib.Evaluator(experiment.system, experiment.mesh,
                                      experiment.state_sharding)
  batches = data.eval_batches_of(config)
  means, _ = evaluator.evaluate(state, batches)
  return {"temperature": float(temperature), "psnr": means["psnr"],
          "gray_psnr": means["gray_psnr"],
          "colorfulness_share": means["colorfulness"] / max(
              means["truth_colorfulness"], 1e-6),
          "num_images": means["num_images"]}
