"""The training loop: set-up, resume, then steps with periodic side work.

    for step in steps:
        state = train_step(state, next(batches))      # jitted, donated
        every log_every_steps:        scalars -> TensorBoard + metrics.jsonl
        every image_every_steps:      gray | prediction | truth grid
        every eval_every_steps:       PSNR/SSIM/... on the evaluation split
        every checkpoint_every_steps: state + data iterator (async)

The same command on the same workdir resumes from the newest checkpoint and
continues exactly (same parameters as an uninterrupted run). SIGTERM/SIGINT
save a checkpoint at the current step and stop cleanly (on several hosts, at
the step they agree on: `_StopSignal`); a SIGKILL loses only the steps since
the last complete checkpoint.

Before anything compiles or any file is written: the config is validated,
its datasets are opened, the workdir's newest checkpoint is checked against
it, and the workdir is locked (a second live run there is refused).
"""

import dataclasses
import json
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from jaxcolor import checkpointing
from jaxcolor import configuration
from jaxcolor import evaluation
from jaxcolor import image_grid
from jaxcolor import parallel
from jaxcolor import prefetch
from jaxcolor import systems
from jaxcolor import workdir_lock


class TrainingDiverged(RuntimeError):
  """A non-finite step; the message names the network(s), the first such
  step and the last good checkpoint."""


@dataclasses.dataclass
class Run:
  """Everything the loop needs, built once by `setup`."""
  config: ml_collections.ConfigDict
  workdir: epath.Path
  mesh: Any
  system: systems.System
  state_sharding: Any
  abstract_state: Any
  checkpointer: checkpointing.Checkpointer
  train_step: "PhasedTrainStep"
  evaluator: evaluation.Evaluator
  rng: jax.Array

  @property
  def is_primary(self) -> bool:
    return jax.process_index() == 0


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Validates the config and builds system, shardings and the jitted step.

  Raises ConfigError before anything compiles.
  """
  system = systems.create(config)
  configuration.validate(config, device_count=jax.device_count(),
                         process_count=jax.process_count(),
                         extra_fields=system.config_fields)
  system.validate()

  mesh = parallel.make_mesh()
  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  abstract_state = jax.eval_shape(system.init, init_rng)
  train_step = PhasedTrainStep(system, mesh, abstract_state)
  state_sharding = train_step.state_sharding
  workdir = epath.Path(workdir)
  checkpointer = checkpointing.Checkpointer(
      workdir / "checkpoints", keep=config.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is not None:  # Before the run's config.json is rewritten.
    checkpointer.check_fits(latest, abstract_state)
  return Run(config=config, workdir=workdir, mesh=mesh, system=system,
             state_sharding=state_sharding, abstract_state=abstract_state,
             checkpointer=checkpointer, train_step=train_step,
             evaluator=evaluation.Evaluator(system, mesh, state_sharding),
             rng=parallel.replicate(step_rng, mesh))


def jit_train_step(system: systems.System, mesh, abstract_state: Any,
                   phase: str = systems.base.SINGLE_PHASE):
  """`system.phase_train_step(phase)`, guarded by `guard_nonfinite`, jitted
  over `mesh`: state replicated and donated, batch sharded on 'data'.
  Returns (step function, state sharding)."""
  state_sharding = jax.tree.map(lambda _: parallel.replicated(mesh),
                                abstract_state)
  step = jax.jit(
      guard_nonfinite(system.phase_train_step(phase), system.networks,
                      discard=system.config.skip_nonfinite_steps),
      in_shardings=(state_sharding, parallel.batch_sharded(mesh),
                    parallel.replicated(mesh)),
      out_shardings=(state_sharding, parallel.replicated(mesh)),
      donate_argnums=(0,))
  return step, state_sharding


def guard_nonfinite(train_step, networks: tuple[str, ...], *,
                    discard: bool = True):
  """`train_step` that flags, and with `discard` drops, a non-finite update.

  Network `n` is finite when its metrics (named `n_*`, after any
  '<phase>/' prefix) and its new state (`state[n]` and entries named
  `n_*`: parameters, batch statistics, optimiser state) are all finite;
  a finite `n_grad_norm` metric stands for its parameters and optimiser
  state (`_unproven`). If
  any network is not, the whole update is dropped (the networks of a
  system train against each other's new values) except the step count,
  which advances as ever so the data position, the schedule and a resume
  stay functions of the step. The state therefore never holds a NaN or an
  infinity, and neither does a checkpoint. The metrics gain
  `nonfinite_<n>` (1.0 where `n` was not finite) and `skipped_steps`, the
  state's count of dropped updates (`systems.base.SKIPPED_STEPS`); the host
  decides whether to stop (`_check_finite`).

  Without `discard` (the training loop's default, `skip_nonfinite_steps`
  False) the update is kept and only flagged: the host stops the run at its
  next check, which comes before any checkpoint is written, so no
  checkpoint holds a non-finite value either, and the step does not pay
  for selecting between two copies of the state.
  """
  skipped_key = systems.base.SKIPPED_STEPS

  def guarded(state, batch, rng):
    new_state, metrics = train_step(state, batch, rng)
    finite = {}
    metric_names = [key.rsplit("/", 1)[-1] for key in metrics]
    for name in networks:
      parts = [_unproven(key, value, f"{name}_grad_norm" in metric_names)
               for key, value in new_state.items()
               if key == name or key.startswith(name + "_")]
      parts += [value for key, value in metrics.items()
                if key.rsplit("/", 1)[-1].startswith(name + "_")]
      finite[name] = _all_true([
          jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(parts)
          if jnp.issubdtype(leaf.dtype, jnp.inexact)])
    ok = jnp.all(jnp.stack([True, *finite.values()]))
    if discard:
      kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                          new_state, state)
    else:
      kept, ok = dict(new_state), jnp.array(True)
    kept["step"] = new_state["step"]
    metrics = dict(metrics, **{f"nonfinite_{name}": (~value).astype(jnp.float32)
                               for name, value in finite.items()})
    # States built by hand (some tests) may lack the counter.
    if skipped_key in state:
      kept[skipped_key] = state[skipped_key] + (~ok).astype(jnp.int32)
      metrics["skipped_steps"] = kept[skipped_key].astype(jnp.float32)
    return kept, metrics

  return guarded


def _unproven(key: str, value: Any, gradient_checked: bool) -> Any:
  """The part of state entry `key` whose finiteness must be read leaf by leaf.

  A network that reports the norm of the gradients it applied
  (`<network>_grad_norm`) proves with that one number that its new
  parameters and optimiser state are finite: Adam-style updates of finite
  values by finite gradients are finite (a gradient whose square overflows
  makes the norm infinite too), and the state they start from is finite (a
  non-finite state is never saved, and never stepped from unnoticed). Its
  batch statistics come from the forward pass and are read. Skipping the
  rest saves a pass over every parameter and both Adam moments: 5 % of the
  pix2pix step on a CPU (docs/benchmarks.md).
  """
  if not gradient_checked:
    return value
  if isinstance(value, systems.base.TrainState):
    return (value.step, value.batch_stats)
  if key.endswith("opt_state"):  # E.g. staged's generator_pretrain_opt_state.
    return ()
  if key.endswith("_ema"):  # A convex mix of finite weights and batch
    return ()               # statistics (the latter read in the TrainState).
  return value


def _all_true(flags: list[jax.Array]) -> jax.Array:
  """Whether all the scalar booleans `flags` are true, as one unfused op.

  `jnp.all(jnp.stack(flags))` is the same value, but XLA:CPU copies that
  reduction of hundreds of inputs into every consumer, here the `where` of
  each state leaf: minutes of compilation for the DLA C-DCGAN and ResNet-18
  U-Net steps (optimization barriers do not stop it: XLA:CPU removes them
  before fusing). XLA never fuses a sort. A concatenation of the leaves
  with one `isfinite` would do too, but copies the state (+15 % step time
  on a CPU); a `lax.cond` in place of the `where`s would too, but on a GPU
  it reads its predicate on the host, a sync every step.
  """
  flags = jnp.stack([jnp.array(True), *flags]).astype(jnp.int32)
  return jnp.sort(flags)[0] == 1


# How long the processes wait for each other's compilation of a step.
_COMPILE_BARRIER_TIMEOUT_S = 3600


class PhasedTrainStep:
  """One jitted step per phase of the system (`System.phase`), each compiled
  when first used, so a run that stays in one phase compiles only that one."""

  def __init__(self, system: systems.System, mesh, abstract_state: Any):
    self._system, self._mesh, self._abstract_state = system, mesh, abstract_state
    self._steps, self._compiled = {}, {}
    self.state_sharding = jax.tree.map(lambda _: parallel.replicated(mesh),
                                       abstract_state)

  def for_step(self, step: int):
    """The jitted step function that runs step `step` (0-based)."""
    phase = self._system.phase(step)
    if phase not in self._steps:
      self._steps[phase], _ = jit_train_step(self._system, self._mesh,
                                             self._abstract_state, phase)
    return self._steps[phase]

  def __call__(self, step: int, state: Any, batch: Any, rng: jax.Array):
    """Runs step `step`: `for_step(step)(state, batch, rng)`, compiled ahead.

    Each phase's step is compiled before its first run and, with several
    processes, all processes then meet at a barrier of the coordination
    service. Without it a process that compiles faster (hosts differ, or
    share their cores) waits in the step's first all-reduce, and gloo (CPU)
    gives up on a peer after 30 s, long before a slow compile ends.
    """
    phase = self._system.phase(step)
    if phase not in self._compiled:
      self._compiled[phase] = self.for_step(step).lower(
          state, batch, rng).compile()
      if jax.process_count() > 1:
        from orbax.checkpoint import multihost  # noqa: PLC0415
        multihost.sync_global_processes(f"jaxcolor_compiled_{phase}_{step}",
                                        timeout=_COMPILE_BARRIER_TIMEOUT_S)
    return self._compiled[phase](state, batch, rng)


def init_state(system: systems.System, state_sharding: Any, rng: jax.Array):
  """`system.init` jitted straight into its shardings (no host copy).

  Initialisation draws with the non-partitionable threefry: the initial
  state is replicated, so both forms give device-count-independent values,
  and this one compiles 4x faster on XLA:CPU (26 s against 6 s for the
  default config's networks), where each random parameter otherwise costs
  about 0.35 s of compile time. Per-step randomness keeps the partitionable
  form, so sharded dropout masks match those of one device.
  """
  init = jax.jit(system.init, out_shardings=state_sharding)
  with jax.threefry_partitionable(False):
    return init(rng)


def initial_state(run: Run, batches: prefetch.DevicePrefetcher) -> Any:
  """The newest checkpoint's state (moving `batches` with it), or a new one."""
  latest = run.checkpointer.latest_step()
  if latest is None:
    state = init_state(run.system, run.state_sharding,
                       jax.random.split(jax.random.key(run.config.seed))[0])
    pretrained = run.system.load_pretrained(state)
    if pretrained is not state:
      state = jax.device_put(pretrained, run.state_sharding)
    return state
  logging.info("Resuming from the checkpoint at step %d in %s.", latest,
               run.checkpointer.directory)
  target = checkpointing.abstract_with_shardings(run.abstract_state,
                                                 run.state_sharding)
  return run.checkpointer.restore(
      latest, target, batches,
      restart_data_state=lambda step: _restart_data_state(run.config, step))


def _restart_data_state(config: ml_collections.ConfigDict, step: int) -> dict:
  """The data position after `step` steps, for a checkpoint written by
  another number of processes (see jaxcolor/data/sharding.py)."""
  from jaxcolor.data import sharding  # noqa: PLC0415
  if config.worker_count > 0:
    raise configuration.ConfigError(
        f"config.worker_count={config.worker_count}: the checkpoint was "
        "written by another number of processes; resume it once with "
        "worker_count=0 (its data position is recomputed from the step).")
  return sharding.restart_state(step, global_batch_size=config.batch_size,
                                process_count=jax.process_count())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints).

  Returns the last evaluation's metrics.
  """
  from jaxcolor import data as input_pipeline  # noqa: PLC0415 (data libs stay out of the step)
  from jaxcolor import metric_logging  # noqa: PLC0415

  run = setup(config, workdir)
  configuration.check_datasets(config)
  run.workdir.mkdir(parents=True, exist_ok=True)
  lock = workdir_lock.acquire(run.workdir)  # One live run per workdir.
  if run.is_primary:
    # Aside, then renamed: colorize and evaluation runs read it.
    written = run.workdir / "config.json.tmp"
    written.write_text(config.to_json_best_effort(indent=2))
    written.replace(run.workdir / "config.json")
  logger = metric_logging.MetricLogger(str(run.workdir), is_primary=run.is_primary)

  # -- data ------------------------------------------------------------------
  host_batches = input_pipeline.create_train_iterator(
      config.dataset, image_size=config.image_size,
      global_batch_size=config.batch_size, seed=config.seed,
      data_dir=config.data_dir or None, worker_count=config.worker_count,
      resize_scale=config.train_resize_scale)
  batches = prefetch.DevicePrefetcher(host_batches, run.mesh)
  eval_dataset = config.eval_dataset or config.dataset

  def eval_batches():
    return input_pipeline.create_eval_batches(
        eval_dataset, image_size=config.image_size,
        batch_size=config.eval_batch_size,
        num_images=config.num_eval_images if config.num_eval_images > 0 else None,
        data_dir=config.data_dir or None)
  eval_batches()  # Fails now, before compiling, if no evaluation image is usable.

  # -- state -----------------------------------------------------------------
  state = initial_state(run, batches)
  first_step = int(jax.device_get(state["step"]))
  logger.truncate_after(first_step)
  if first_step == 0:
    _log_overview(run, state, logger)

  # -- loop ------------------------------------------------------------------
  stop = _StopSignal(run.checkpointer)
  progress = _Progress(first_step, config.num_train_steps)
  pending: list[dict] = []
  report_data = input_pipeline.CountReport("Training files")
  last_eval: dict = {}
  step = first_step
  logging.info("Training %s from step %d to %d on %d device(s), %d host(s).",
               config.system, step, config.num_train_steps, jax.device_count(),
               jax.process_count())
  with stop:
    while step < config.num_train_steps:
      state, step_metrics = run.train_step(step, state, next(batches),
                                           run.rng)
      step += 1
      pending.append(step_metrics)

      if step % config.log_every_steps == 0 or step == config.num_train_steps:
        scalars = _mean_metrics(pending)
        scalars.update(_check_finite(pending, step, run))
        pending = []
        scalars.update(progress.update(step))
        # data/*: files skipped or converted, as of the batches consumed.
        scalars.update(report_data(input_pipeline.training_counts(batches)))
        logger.scalars(step, scalars)
        logging.info("%s", _format_line(step, config.num_train_steps, scalars))

      at_end = step == config.num_train_steps
      evaluating = (step % config.eval_every_steps == 0 or at_end
                    or step % config.image_every_steps == 0)
      if evaluating and not config.skip_nonfinite_steps:
        # Nor is a diverged state evaluated (its numbers and images written).
        _check_finite(pending, step, run, warn=False)
      if step % config.eval_every_steps == 0 or at_end:
        last_eval = _evaluate(run, state, eval_batches(), logger, step,
                              save_grid=step % config.image_every_steps == 0 or at_end)
      elif step % config.image_every_steps == 0:
        _evaluate(run, state, eval_batches(), logger, step, save_grid=True,
                  grid_only=True)

      stopping = stop.reached(step)
      if step % config.checkpoint_every_steps == 0 or at_end or stopping:
        _check_finite(pending, step, run, warn=False)
        run.checkpointer.save(step, state, batches, force=True)
      if stopping:
        run.checkpointer.wait_until_finished()
        logging.warning("Stopping at step %d on %s; checkpoint saved in %s. "
                        "Run the same command to resume.", step,
                        stop.signal_name, run.checkpointer.directory)
        break
  run.checkpointer.wait_until_finished()
  logger.flush()
  logger.close()
  lock.release()
  return last_eval


# -- periodic work -------------------------------------------------------------


def _evaluate(run: Run, state: Any, batches, logger, step: int, *,
              save_grid: bool, grid_only: bool = False) -> dict:
  """Evaluates, logs `eval/*` scalars, writes eval/<step>.json and the grid."""
  config = run.config
  if grid_only:
    batches = _take_images(batches, config.num_grid_images)
  start = time.perf_counter()
  means, images = run.evaluator.evaluate(
      state, batches, num_grid_images=config.num_grid_images if save_grid else 0)
  if not grid_only:
    means["eval_seconds"] = time.perf_counter() - start
    means["dataset"] = config.eval_dataset or config.dataset
    means.update(batches.count_scalars())  # data/*: files skipped, converted
    logger.scalars(step, {f"eval/{k}": v for k, v in means.items()
                          if isinstance(v, (int, float))})
    logging.info("eval step %d: %s", step, ", ".join(
        f"{k}={v:.4g}" for k, v in means.items()
        if isinstance(v, float) and "_" not in k
        or k in ("pixel_accuracy", "top1_accuracy")))
    if run.is_primary:
      path = run.workdir / "eval" / f"{step}.json"
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps({"step": step, **means}, indent=2))
  if save_grid and images and run.is_primary:
    grid = image_grid.make_grid([images["gray"], images["prediction"],
                                 images["truth"]])
    image_grid.save_png(run.workdir / "images" / f"grid_{step:07d}.png", grid)
    logger.images(step, {"gray_prediction_truth": grid})
  return means


def _take_images(batches, count: int):
  seen = 0
  for batch in batches:
    if seen >= count:
      return
    seen += int(batch["mask"].sum())
    yield batch


def _log_overview(run: Run, state: Any, logger) -> None:
  from clu import parameter_overview  # noqa: PLC0415
  for name in run.system.networks:
    params = jax.device_get(state[name].params)
    logging.info("%s parameters:\n%s", name,
                 parameter_overview.get_parameter_overview(params))
  counts = {f"{name}_parameters": int(sum(
      np.prod(x.shape) for x in jax.tree.leaves(state[name].params)))
      for name in run.system.networks}
  logging.info("Parameter counts: %s", counts)
  flat = {k: v for k, v in _flatten(run.config.to_dict()).items()}
  logger.hparams({**flat, **counts})


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
  """Means over the steps since the last log (one host sync per interval).

  Each metric is averaged over the steps that report it: at a change of
  phase (`System.phase`) the steps before and after report different names.
  """
  values = jax.device_get(pending)
  names = dict.fromkeys(k for metrics in values for k in metrics)
  return {k: float(np.mean([m[k] for m in values if k in m])) for k in names}


def _check_finite(pending: list[dict], step: int, run: Run, *,
                  warn: bool = True) -> dict[str, float]:
  """Stops the run at a step `guard_nonfinite` dropped, unless configured
  to skip such steps; then warns (`warn`) and goes on.

  `pending`: the metrics of the steps up to `step` not yet checked (one
  host sync). Returns the cumulative `skipped_steps` for the log (the mean
  of a running count would mislead).
  """
  if not pending:
    return {}
  values = jax.device_get(pending)
  first_step = step - len(values) + 1
  first_bad: dict[str, int] = {}  # network -> its first non-finite step
  bad_steps = 0
  for offset, metrics in enumerate(values):
    names = [name for name in run.system.networks
             if metrics.get(f"nonfinite_{name}", 0) > 0]
    bad_steps += bool(names)
    for name in names:
      first_bad.setdefault(name, first_step + offset)
  skipped = values[-1].get("skipped_steps")
  out = {} if skipped is None else {"skipped_steps": float(skipped)}
  if not first_bad:
    return out
  where = ", ".join(f"{name} at step {at}" for name, at in first_bad.items())
  if not run.config.skip_nonfinite_steps:
    # The networks of the first non-finite step: the steps after it start
    # from its values, so every network follows.
    at = min(first_bad.values())
    where = ", ".join(f"{name} at step {at}" for name, first in
                      first_bad.items() if first == at)
    shown = [k for k, v in values[at - first_step].items()
             if not np.all(np.isfinite(v))]
    run.checkpointer.wait_until_finished()  # So the newest one is complete.
    last = run.checkpointer.latest_step()
    checkpoint = ("none" if last is None else
                  f"step {last} in {run.checkpointer.directory}")
    raise TrainingDiverged(
        f"non-finite {where} "
        f"({', '.join(shown) or 'new parameters or optimiser state'}); the "
        f"run stopped at step {step} without saving. Last good "
        f"checkpoint: {checkpoint}. Lower the learning rate, or pass "
        "--config.skip_nonfinite_steps=True to skip such steps.")
  if warn:
    logging.warning(
        "Skipped %d non-finite step(s) of steps %d-%d (%s): %s in all "
        "(config.skip_nonfinite_steps=True).", bad_steps, first_step, step,
        where, int(skipped) if skipped is not None else "?")
  return out


def _format_line(step: int, total: int, scalars: dict[str, float]) -> str:
  shown = {k: v for k, v in scalars.items() if "loss" in k or "score" in k}
  eta = scalars.get("eta_seconds")
  return (f"step {step}/{total} "
          + " ".join(f"{k}={v:.4g}" for k, v in shown.items())
          + f" | {scalars.get('steps_per_second', 0):.2f} steps/s"
          + (f" | ETA {_duration(eta)}" if eta is not None else ""))


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class _Progress:
  """Steps per second since the last report, and the time left."""

  def __init__(self, step: int, total: int):
    self.total = total
    self.step, self.time = step, time.perf_counter()

  def update(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    rate = (step - self.step) / max(now - self.time, 1e-9)
    self.step, self.time = step, now
    return {"steps_per_second": rate,
            "eta_seconds": (self.total - step) / max(rate, 1e-9)}


class _StopSignal:
  """Turns SIGTERM/SIGINT into a checkpoint at the current step and a stop.

  One process: the step during which the signal came (`reached`). The
  processes of a multi-host run (jax.distributed) must all save at the same
  step, and a signal reaches them at different steps, or only some of them:
  JAX's preemption service agrees on one (`Checkpointer.reached_preemption`).
  It catches SIGTERM with its own C handler, which a Python handler would
  replace, so there only SIGINT is caught here, and handed on as a SIGTERM.
  With the service off (jax_enable_preemption_service) no handler is
  installed: a signal ends such a run, which resumes from its last checkpoint.
  """

  def __init__(self, checkpointer: checkpointing.Checkpointer):
    self._checkpointer = checkpointer
    self._agreed = jax.distributed.is_initialized()
    self.requested = False
    self.signal_name = ""
    self._previous = {}

  def reached(self, step: int) -> bool:
    """Whether to checkpoint at `step` and stop; ask after every step."""
    if not self._agreed:
      return self.requested
    if self._checkpointer.reached_preemption(step):
      self.signal_name = self.signal_name or "a preemption notice (SIGTERM)"
      return True
    return False

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # A second signal: stop at once.
      raise KeyboardInterrupt
    self.requested = True
    self.signal_name = signal.Signals(signum).name
    logging.warning("%s received: saving a checkpoint after this step%s.",
                    self.signal_name,
                    " (the one all processes agree on)" if self._agreed else "")
    if self._agreed:
      signal.raise_signal(signal.SIGTERM)  # To the preemption service.

  def __enter__(self):
    signals = (signal.SIGTERM, signal.SIGINT)
    if self._agreed:
      service = jax.config.jax_enable_preemption_service
      signals = (signal.SIGINT,) if service else ()
      if not service:
        logging.warning("jax_enable_preemption_service is off: a signal stops "
                        "this multi-process run without a checkpoint.")
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. some test runners).
        pass
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
