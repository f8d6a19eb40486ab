"""The evaluation job: score a run's saved checkpoints; never train.

  python -m jaxcolor.main --config configs/default.py --workdir runs/default \\
      --mode=evaluate [--config.evaluation.checkpoints=all|latest|5000,10000] \\
      [--config.eval_dataset=folder:/photos] [--config.num_eval_images=0] \\
      [--config.evaluation.fid_weights=pt_inception-2015-12-05-6726825d.pth]

(or `jaxcolor evaluate --config ... --workdir ...`, which adds --mode=evaluate).

For each chosen checkpoint of WORKDIR/checkpoints (the state only; the data
iterator is not read) this writes

  WORKDIR/eval/<step>.json         every metric, the dataset, the image count
  WORKDIR/eval/<step>/index.html   metric table; gray | prediction | truth
  WORKDIR/eval/events.out.*        the scalars for TensorBoard (run 'eval')

The split is the config's evaluation split (`eval_dataset`, else that of
`dataset`), its first `num_eval_images` images (0: all). A training run's own
periodic evaluations write the same JSON names; an evaluation run replaces
them with its fuller results. Metric definitions: docs/metrics.md.
"""

import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from jaxcolor import backends
from jaxcolor import data
from jaxcolor.core.errors import ConfigError
from jaxcolor.evaluation import color_metrics
from jaxcolor.evaluation import evaluator as evaluator_lib
from jaxcolor.evaluation import fid as fid_lib
from jaxcolor.evaluation import report
from jaxcolor.runtime import distributed
from jaxcolor.training import checkpointing
from jaxcolor.training import experiment as experiment_lib
from jaxcolor.training import run_log
from jaxcolor.training import rundir as rundir_lib

# Shown in the log summary, in this order (the JSON has everything).
_SUMMARY = ("psnr", "ssim", "pixel_accuracy", "raw_accuracy_auc", "ab_mse",
            "ab_mae", "colorfulness", "fid")


class NoCheckpointError(ConfigError):
  """The workdir has no checkpoint, or not at a requested step."""


def select_steps(spec: str, available: list[int]) -> list[int]:
  """The checkpoint steps `config.evaluation.checkpoints` names.

  Args:
    spec: 'latest', 'all', or comma-separated steps ('5000,10000').
    available: the steps saved in the run.

  Raises:
    NoCheckpointError: no checkpoint, or a named step that was not saved
      (the message lists those that were).
  """
  if not available:
    raise NoCheckpointError("No checkpoint to evaluate.")
  spec = str(spec).replace(" ", "")
  if spec == "latest":
    return [max(available)]
  if spec == "all":
    return sorted(available)
  steps = [int(part) for part in spec.split(",")]
  absent = [s for s in steps if s not in available]
  if absent:
    raise NoCheckpointError(
        f"No checkpoint at step(s) {', '.join(map(str, absent))}; saved "
        f"steps: {', '.join(map(str, sorted(available)))}.")
  return steps


def _fid_accumulator(config: ml_collections.ConfigDict, mesh):
  """The FID accumulator, or None (with the reason logged) without weights."""
  path = config.evaluation.fid_weights
  if not path:
    logging.warning("%s", fid_lib.missing_weights_message())
    return None
  if not epath.Path(path).exists():
    raise ConfigError(
        f"config.evaluation.fid_weights={path!r}: no such file; download "
        f"{fid_lib.WEIGHTS_URL}, or set '' to evaluate without FID.")
  try:
    variables = fid_lib.load_weights(path)
  except (OSError, ValueError, ImportError) as e:  # Digest, pickle, no torch.
    raise ConfigError(
        f"config.evaluation.fid_weights={path!r}: {e}") from None
  logging.info("FID: Inception weights %s (sha256 verified).", path)
  return fid_lib.FIDAccumulator(fid_lib.InceptionFeatures(
      variables, mesh, compiler_options=backends.compiler_options(
          config, jax.default_backend())))


def _image_captions(images: dict[str, np.ndarray]) -> list[str]:
  """'PSNR 23.4 dB (gray 21.0)' for each report row."""
  if not {"prediction", "truth", "gray"} <= set(images):
    return []
  truth = images["truth"] / 255.0
  psnr = np.asarray(color_metrics.psnr(images["prediction"] / 255.0, truth))
  gray = np.asarray(color_metrics.psnr(images["gray"] / 255.0, truth))
  return [f"PSNR {p:.1f} dB (gray {g:.1f})" for p, g in zip(psnr, gray)]


def run(config: ml_collections.ConfigDict, workdir: str,
        distributed_start: bool = False) -> dict:
  """The evaluation job (`jaxcolor evaluate`): the process's start
  (jaxcolor/runtime/distributed.py), then `evaluate_checkpoints`."""
  distributed.start_process(distributed_start)
  return evaluate_checkpoints(config, workdir)


def evaluate_checkpoints(config: ml_collections.ConfigDict,
                         workdir: str) -> dict[int, dict[str, Any]]:
  """Evaluates the checkpoints of `workdir` chosen by the config.

  Returns:
    {step: metrics} as written to WORKDIR/eval/<step>.json.

  Raises:
    ConfigError: an invalid config (before anything compiles).
    NoCheckpointError: no checkpoints, or a requested step is missing.
  """
  experiment = experiment_lib.build(config, data="eval")
  run_dir = rundir_lib.RunDir(workdir)
  if not run_dir.checkpoint_dir.is_dir():
    raise NoCheckpointError(f"No checkpoints in {run_dir}: "
                            f"{run_dir.checkpoint_dir} does not exist.")
  # Not the training run's lock: evaluating a run while it trains is fine.
  lock = run_dir.lock(rundir_lib.EVAL_LOCK_NAME)
  checkpointer = checkpointing.Checkpointer(
      run_dir.checkpoint_dir, keep=config.keep_checkpoints, asynchronous=False)
  writer = None
  try:
    steps = select_steps(config.evaluation.checkpoints,
                         checkpointer.all_steps())
    colorizes = experiment.system.colorizes
    fid = _fid_accumulator(config, experiment.mesh) if colorizes else None
    evaluator = evaluator_lib.Evaluator(experiment.system, experiment.mesh,
                                        experiment.state_sharding, fid=fid)
    is_primary = jax.process_index() == 0
    writer = run_log.EventWriter(run_dir.eval_dir if is_primary else None,
                                 asynchronous=False)
    results = {}
    for step in steps:
      means, images = _evaluate_step(experiment, checkpointer, evaluator, step)
      if fid is None and colorizes:
        means["fid_skipped"] = fid_lib.missing_weights_message()
      results[step] = means
      writer.write_scalars(step, {f"eval/{k}": v for k, v in means.items()
                                  if isinstance(v, (int, float))})
      if is_primary:
        record = {"checkpoint": str(checkpointer.directory / str(step)),
                  **means}
        run_dir.write_eval(step, record)
        page = report.write_report(
            run_dir.report_dir(step), {"step": step, **record}, images,
            title=f"{config.system}: step {step} on {means['dataset']}",
            captions=_image_captions(images))
        logging.info("Report: %s", page)
      logging.info("step %d: %s", step, ", ".join(
          f"{k}={means[k]:.4g} (gray {means.get('gray_' + k, float('nan')):.4g})"
          for k in _SUMMARY if k in means))
    return results
  finally:
    if writer is not None:
      writer.flush()
      writer.close()
    checkpointer.close()
    lock.release()


def _evaluate_step(experiment: experiment_lib.Experiment,
                   checkpointer: checkpointing.Checkpointer,
                   evaluator: evaluator_lib.Evaluator, step: int):
  """(means, report images) of checkpoint `step` on the evaluation split."""
  config = experiment.config
  dataset = data.eval_dataset_of(config)
  logging.info("Evaluating the checkpoint at step %d of %s on %s.", step,
               checkpointer.directory, dataset)
  state = experiment.restore(checkpointer, step)
  batches = data.eval_batches_of(config)
  start = time.perf_counter()
  means, images = evaluator.evaluate(
      state, batches, num_grid_images=config.evaluation.num_report_images)
  means["eval_seconds"] = time.perf_counter() - start
  means["dataset"] = dataset
  means["image_size"] = config.image_size
  means.update(batches.count_scalars())  # data/*: files skipped, converted
  return means, images
