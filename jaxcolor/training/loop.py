"""The training job: set-up, resume, then steps with periodic side work.

    for step in steps:
        state = train_step(state, next(batches))      # jitted, donated
        every log_every_steps:        scalars -> TensorBoard + metrics.jsonl
        every image_every_steps:      gray | prediction | truth grid
        every eval_every_steps:       PSNR/SSIM/... on the evaluation split
        every checkpoint_every_steps: state + data iterator (async)

The same command on the same workdir resumes from the newest checkpoint and
continues exactly (same parameters as an uninterrupted run). SIGTERM/SIGINT
save a checkpoint at the current step and stop cleanly
(`preemption.StopSignal`); a SIGKILL loses only the steps since the last
complete checkpoint. A non-finite step stops the run, or is skipped
(`divergence`).

Before anything compiles or any file is written: the config is validated,
its datasets are opened (`experiment.build`), the workdir's newest
checkpoint is checked against it, and the workdir is locked (a second live
run there is refused). The lock, the logger and the checkpointer are
released however the run ends.
"""

import time
from typing import Any

import jax
import ml_collections
from absl import logging

from jaxcolor import data
from jaxcolor.core.errors import ConfigError
from jaxcolor.data import prefetch
from jaxcolor.data import sharding
from jaxcolor.evaluation import evaluator as evaluator_lib
from jaxcolor.evaluation import image_grid
from jaxcolor.runtime import distributed
from jaxcolor.training import ab_prior
from jaxcolor.training import checkpointing
from jaxcolor.training import divergence
from jaxcolor.training import experiment as experiment_lib
from jaxcolor.training import preemption
from jaxcolor.training import run_log
from jaxcolor.training import rundir as rundir_lib
from jaxcolor.training import train_step as train_step_lib

def run(config: ml_collections.ConfigDict, workdir: str,
        distributed_start: bool = False) -> dict:
  """The training job (`jaxcolor train`): the process's start
  (jaxcolor/runtime/distributed.py), then `train_and_evaluate`."""
  distributed.start_process(distributed_start)
  return train_and_evaluate(config, workdir)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints).

  Returns the last evaluation's metrics.
  """
  experiment = experiment_lib.build(config, data="train")
  run_dir = rundir_lib.RunDir(workdir)
  checkpointer = checkpointing.Checkpointer(run_dir.checkpoint_dir,
                                            keep=config.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is not None:  # Before the run's config.json is rewritten.
    checkpointer.check_fits(latest, experiment.abstract_state)
  run_dir.path.mkdir(parents=True, exist_ok=True)
  lock = run_dir.lock()  # One live run per workdir.
  is_primary = jax.process_index() == 0
  logger = None
  try:
    if is_primary:
      run_dir.write_config(config)
    logger = run_log.MetricLogger(run_dir, is_primary=is_primary)
    return _train(experiment, run_dir, checkpointer, logger)
  finally:
    checkpointer.wait_until_finished()
    checkpointer.close()
    if logger is not None:
      logger.close()
    lock.release()


def _train(experiment: experiment_lib.Experiment, run_dir: rundir_lib.RunDir,
           checkpointer: checkpointing.Checkpointer,
           logger: run_log.MetricLogger) -> dict:
  """The loop of `train_and_evaluate`, in its set-up's `try`."""
  config, system = experiment.config, experiment.system
  batches = prefetch.DevicePrefetcher(data.create_train_iterator(
      config.dataset, image_size=config.image_size,
      global_batch_size=config.batch_size, seed=config.seed,
      data_dir=config.data_dir or None, worker_count=config.worker_count,
      resize_scale=config.train_resize_scale), experiment.mesh)
  eval_batches = lambda: data.eval_batches_of(config)
  eval_batches()  # Fails now, before compiling, if no evaluation image is usable.

  state = _initial_state(experiment, checkpointer, batches)
  first_step = step = int(jax.device_get(state["step"]))
  if first_step == 0 and getattr(system, "ab_bins", False):
    state = system.with_bin_prior(state, ab_prior.load_or_estimate(
        config, run_dir.path, system.bins_factor))
  logger.truncate_after(first_step)
  if first_step == 0:
    run_log.log_overview(system, config, state, logger)

  step_fn = train_step_lib.PhasedTrainStep(system, experiment.mesh,
                                           experiment.abstract_state)
  rng = experiment.step_rng
  evaluator = evaluator_lib.Evaluator(system, experiment.mesh,
                                      experiment.state_sharding)
  progress = run_log.Progress(first_step=first_step,
                              num_train_steps=config.num_train_steps,
                              every_steps=config.log_every_steps)
  profile = run_log.profiler(str(run_dir.path), first_step=first_step + 2,
                             num_steps=config.profile_steps)
  report_data = data.CountReport("Training files")
  check = lambda pending, step, warn=True: divergence.check_finite(
      pending, step, networks=system.networks, checkpointer=checkpointer,
      skip_nonfinite_steps=config.skip_nonfinite_steps, warn=warn)
  pending: list[dict] = []
  last_eval: dict = {}
  total = config.num_train_steps
  logging.info("Training %s from step %d to %d on %d device(s), %d host(s).",
               config.system, step, total, jax.device_count(),
               jax.process_count())
  with preemption.StopSignal(checkpointer) as stop:
    while step < total:
      state, step_metrics = step_fn(step, state, next(batches), rng)
      step += 1
      pending.append(step_metrics)
      progress(step)
      if profile is not None:
        profile(step)
      at_end = step == total

      if step % config.log_every_steps == 0 or at_end:
        scalars = run_log.mean_metrics(pending)
        scalars.update(check(pending, step))
        pending = []
        scalars.update(progress.latest)
        # data/*: files skipped or converted, as of the batches consumed.
        scalars.update(report_data(data.training_counts(batches)))
        logger.scalars(step, scalars)
        logging.info("%s", run_log.format_line(step, total, scalars))

      evaluating = step % config.eval_every_steps == 0 or at_end
      gridding = step % config.image_every_steps == 0
      if (evaluating or gridding) and not config.skip_nonfinite_steps:
        # Nor is a diverged state evaluated (its numbers and images written).
        check(pending, step, warn=False)
      if evaluating or gridding:
        with progress.timed("eval"):
          means = _evaluate(experiment, evaluator, run_dir, logger, state,
                            eval_batches(), step, grid=gridding or at_end,
                            grid_only=not evaluating)
        last_eval = means if evaluating else last_eval

      stopping = stop.reached(step)
      if step % config.checkpoint_every_steps == 0 or at_end or stopping:
        check(pending, step, warn=False)
        with progress.timed("checkpoint"):
          checkpointer.save(step, state, batches, force=True)
      if stopping:
        checkpointer.wait_until_finished()
        logging.warning("Stopping at step %d on %s; checkpoint saved in %s. "
                        "Run the same command to resume.", step,
                        stop.signal_name, checkpointer.directory)
        break
  return last_eval


def _initial_state(experiment: experiment_lib.Experiment,
                   checkpointer: checkpointing.Checkpointer,
                   batches: prefetch.DevicePrefetcher) -> Any:
  """The newest checkpoint's state (moving `batches` with it), or a new one."""
  latest = checkpointer.latest_step()
  if latest is None:
    return experiment.init_state()
  logging.info("Resuming from the checkpoint at step %d in %s.", latest,
               checkpointer.directory)
  return experiment.restore(
      checkpointer, latest, batches,
      restart_data_state=lambda step: _restart_data_state(experiment.config,
                                                          step))


def _restart_data_state(config: ml_collections.ConfigDict, step: int) -> dict:
  """The data position after `step` steps, for a checkpoint written by
  another number of processes (see jaxcolor/data/sharding.py)."""
  if config.worker_count > 0:
    raise ConfigError(
        f"config.worker_count={config.worker_count}: the checkpoint was "
        "written by another number of processes; resume it once with "
        "worker_count=0 (its data position is recomputed from the step).")
  return sharding.restart_state(step, global_batch_size=config.batch_size,
                                process_count=jax.process_count())


def _evaluate(experiment: experiment_lib.Experiment,
              evaluator: evaluator_lib.Evaluator, run_dir: rundir_lib.RunDir,
              logger: run_log.MetricLogger, state: Any, batches, step: int, *,
              grid: bool, grid_only: bool) -> dict:
  """Evaluates (or, `grid_only`, draws the grid's images alone), logs
  `eval/*` scalars, writes eval/<step>.json and the grid."""
  config = experiment.config
  if grid_only:
    batches = _take_images(batches, config.num_grid_images)
  start = time.perf_counter()
  means, images = evaluator.evaluate(
      state, batches, num_grid_images=config.num_grid_images if grid else 0)
  is_primary = jax.process_index() == 0
  if not grid_only:
    means["eval_seconds"] = time.perf_counter() - start
    means["dataset"] = data.eval_dataset_of(config)
    means["image_size"] = config.image_size
    means.update(batches.count_scalars())  # data/*: files skipped, converted
    logger.scalars(step, {f"eval/{k}": v for k, v in means.items()
                          if isinstance(v, (int, float))})
    logging.info("eval step %d: %s", step, ", ".join(
        f"{k}={v:.4g}" for k, v in means.items()
        if isinstance(v, float) and "_" not in k
        or k in ("pixel_accuracy", "top1_accuracy")))
    if is_primary:
      run_dir.write_eval(step, means)
  if grid and images and is_primary:
    picture = image_grid.make_grid([images["gray"], images["prediction"],
                                    images["truth"]])
    run_dir.save_grid(step, picture)
    logger.images(step, {"gray_prediction_truth": picture})
  return means


def _take_images(batches, count: int):
  seen = 0
  for batch in batches:
    if seen >= count:
      return
    seen += int(batch["mask"].sum())
    yield batch
