"""What a training run reports: scalars and images to TensorBoard (clu) and
to metrics.jsonl, its console lines, and its speed and time left.

Only process 0 writes files; the others log to the Python logger alone.
Each `scalars` call appends one JSON line with a `step` key to
WORKDIR/metrics.jsonl (`rundir.RunDir.append_metrics`), so scripts can
follow a run without TensorBoard.
"""

from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions

from jaxcolor import rundir as rundir_lib


class MetricLogger:
  """TensorBoard + JSON-lines writer for one run."""

  def __init__(self, run_dir: rundir_lib.RunDir, *, is_primary: bool):
    self.is_primary = is_primary
    self.run_dir = run_dir
    self.writer = metric_writers.create_default_writer(
        str(run_dir.path), just_logging=not is_primary, asynchronous=True)

  def truncate_after(self, step: int) -> None:
    """Drops JSON lines logged after `step` (a resumed run logs them again)."""
    if self.is_primary:
      self.run_dir.truncate_metrics_after(step)

  def scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    plain = {k: np.asarray(v).item() if np.ndim(v) == 0 else v
             for k, v in scalars.items()}
    self.writer.write_scalars(step, {k: v for k, v in plain.items()
                                     if isinstance(v, (int, float))})
    if self.is_primary:
      self.run_dir.append_metrics(step, plain)

  def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """`images`: name -> uint8 [N, H, W, 3] or [H, W, 3]."""
    self.writer.write_images(
        step, {k: v if v.ndim == 4 else v[None] for k, v in images.items()})

  def hparams(self, hparams: Mapping[str, Any]) -> None:
    self.writer.write_hparams({k: v if isinstance(v, (int, float, str, bool))
                               else str(v) for k, v in hparams.items()})

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()


class Progress(periodic_actions.ReportProgress):
  """clu's progress report, with steps/s and ETA that leave out the time
  spent in `timed(...)` blocks (evaluation, checkpointing).

  clu's own rate divides by the whole interval, so the report after an
  evaluation shows a dip and a jump in the ETA; here that time is kept out
  of the rate.
  Call it after every step (`progress(step)`); `latest` holds the newest
  report's `steps_per_second` and `eta_seconds` for the log line.
  """

  def __init__(self, *, first_step: int, num_train_steps: int,
               every_steps: int):
    super().__init__(num_train_steps=num_train_steps, every_steps=every_steps,
                     every_secs=None)
    self._timed_at_report = 0.0
    self.latest: dict[str, float] = {}
    self(first_step)  # The first call only starts the clock.

  def _apply(self, step: int, t: float) -> None:
    timed = sum(self._time_per_part.values())
    busy = (t - self._previous_time) - (timed - self._timed_at_report)
    self._timed_at_report = timed
    rate = (step - self._previous_step) / max(busy, 1e-9)
    self.latest = {"steps_per_second": rate,
                   "eta_seconds": (self._num_train_steps - step) / max(rate, 1e-9)}


def profiler(workdir: str, *, first_step: int, num_steps: int
             ) -> periodic_actions.Profile | None:
  """clu's on-demand device profile of `num_steps` steps from `first_step`,
  written under WORKDIR/plugins/profile for TensorBoard; None when
  `num_steps` is 0 (the default: profiling costs time)."""
  if num_steps <= 0:
    return None
  return periodic_actions.Profile(logdir=workdir, num_profile_steps=num_steps,
                                  profile_duration_ms=None,
                                  first_profile=first_step, every_secs=None)


def mean_metrics(pending: list[dict]) -> dict[str, float]:
  """Means over the steps since the last log (one host sync per interval).

  Each metric is averaged over the steps that report it: at a change of
  phase (`System.phase`) the steps before and after report different names.
  """
  values = jax.device_get(pending)
  names = dict.fromkeys(k for metrics in values for k in metrics)
  return {k: float(np.mean([m[k] for m in values if k in m])) for k in names}


def format_line(step: int, total: int, scalars: dict[str, float]) -> str:
  """'step 50/1000 generator_loss=... | 1.23 steps/s | ETA 12m30s'."""
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


def log_overview(system, config, state: Any, logger: MetricLogger) -> None:
  """Each network's parameter table in the log; counts and the flattened
  config as TensorBoard hparams."""
  for name in system.networks:
    params = jax.device_get(state[name].params)
    logging.info("%s parameters:\n%s", name,
                 parameter_overview.get_parameter_overview(params))
  counts = {f"{name}_parameters": int(sum(
      np.prod(x.shape) for x in jax.tree.leaves(state[name].params)))
      for name in system.networks}
  logging.info("Parameter counts: %s", counts)
  logger.hparams({**_flatten(config.to_dict()), **counts})


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out
