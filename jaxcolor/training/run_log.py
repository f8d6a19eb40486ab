"""What a training run reports: scalars and images to TensorBoard and to
metrics.jsonl, its console lines, and its speed and time left.

Only process 0 writes files; the others log to the Python logger alone.
Each `scalars` call appends one JSON line with a `step` key to
WORKDIR/metrics.jsonl (`rundir.RunDir.append_metrics`), so scripts can
follow a run without TensorBoard.

Nothing here imports TensorFlow: TensorBoard's event files are written with
the `tensorboard` package's protos and record format (`EventWriter`), not
with clu's `metric_writers` or `periodic_actions`, which import TensorFlow
at import time (1.3 GB installed, seconds to import; only the SavedModel
export needs it, docs/install.md).
"""

import concurrent.futures
import contextlib
import io
import itertools
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import parameter_overview
from etils import epath
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

from jaxcolor.training import rundir as rundir_lib

# The last part of an event file's name, unique within the process (as
# TensorBoard's own writer numbers its files).
_file_numbers = itertools.count()


class EventWriter:
  """Scalars, images and hparams for TensorBoard, and a log line for each.

  The records are those clu's TensorBoard writer (`tf.summary`) wrote, under
  the same tags: a scalar as a float32 tensor of the scalars plugin, a batch
  of images as the images plugin's string tensor [width, height, png, ...],
  hparams as the hparams plugin's session start. The log lines are those of
  clu's `LoggingWriter`.

  `logdir` None: the log lines alone (processes other than 0 write no
  files). `asynchronous`: encoding and writing run on one background thread,
  in call order, as in clu's `AsyncMultiWriter`, so that PNG encoding does
  not hold up training; `flush` waits for them and raises the first error.
  Each write is flushed to the file, so TensorBoard sees it at once.
  """

  def __init__(self, logdir: str | os.PathLike | None, *, asynchronous: bool):
    self._records = None
    if logdir is not None:
      directory = epath.Path(logdir)
      directory.mkdir(parents=True, exist_ok=True)
      name = (f"events.out.tfevents.{int(time.time()):010d}."
              f"{socket.gethostname()}.{os.getpid()}.{next(_file_numbers)}")
      self._file = (directory / name).open("wb")
      self._records = record_writer.RecordWriter(self._file)
      self._write(event_pb2.Event(wall_time=time.time(),
                                  file_version="brain.Event:2"))
    self._pool = (concurrent.futures.ThreadPoolExecutor(max_workers=1)
                  if asynchronous else None)
    self._pending: list[concurrent.futures.Future] = []

  def write_scalars(self, step: int, scalars: Mapping[str, int | float]
                    ) -> None:
    scalars = dict(scalars)  # As it is now, not when the thread gets to it.
    logging.info("[%d] %s", step, ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in sorted(scalars.items())))
    self._submit(lambda: [self._summary(step, scalar_summary.scalar_pb(k, v))
                          for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """`images`: name -> uint8 [N, H, W, C], all N shown at the step."""
    logging.info("[%d] Got images: %s.", step,
                 {k: v.shape for k, v in images.items()})
    self._submit(lambda: [self._summary(step, _image_summary(k, v))
                          for k, v in images.items()])

  def write_hparams(self, hparams: Mapping[str, int | float | str | bool]
                    ) -> None:
    logging.info("[Hyperparameters] %s", hparams)
    self._submit(lambda: self._summary(0, hparams_summary.hparams_pb(
        dict(hparams))))

  def flush(self) -> None:
    pending, self._pending = self._pending, []
    for future in pending:
      future.result()  # Raises what the background write raised.

  def close(self) -> None:
    try:
      self.flush()
    finally:
      if self._pool is not None:
        self._pool.shutdown()
      if self._records is not None:
        self._records.close()
        self._records = None

  def _submit(self, write: Callable[[], Any]) -> None:
    if self._records is None:
      return
    if self._pool is None:
      write()
      return
    # The writes done since the last call: raise what one raised (as clu's
    # asynclib does at the next call), and keep only those still running.
    running = []
    for future in self._pending:
      if future.done():
        future.result()
      else:
        running.append(future)
    self._pending = running + [self._pool.submit(write)]

  def _summary(self, step: int, summary: summary_pb2.Summary) -> None:
    self._write(event_pb2.Event(wall_time=time.time(), step=step,
                                summary=summary))

  def _write(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())
    self._records.flush()


def _image_summary(tag: str, images: np.ndarray) -> summary_pb2.Summary:
  """uint8 [N, H, W, C] as `tf.summary.image` writes it: one string tensor
  [width, height, png_0, ..., png_N-1] under `tag`."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"image summary {tag!r}: expected uint8 [N, H, W, C], "
                     f"got {images.dtype} {list(images.shape)}.")
  pngs = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image
                    ).save(buffer, format="PNG")
    pngs.append(buffer.getvalue())
  _, height, width, _ = images.shape
  tensor = tensor_util.make_tensor_proto(
      np.array([str(width).encode(), str(height).encode(), *pngs],
               dtype=object))
  summary = summary_pb2.Summary()
  summary.value.add(tag=tag, tensor=tensor,
                    metadata=image_metadata.create_summary_metadata(
                        display_name=None, description=None))
  return summary


class MetricLogger:
  """TensorBoard + JSON-lines writer for one run."""

  def __init__(self, run_dir: rundir_lib.RunDir, *, is_primary: bool):
    self.is_primary = is_primary
    self.run_dir = run_dir
    self.writer = EventWriter(run_dir.path if is_primary else None,
                              asynchronous=True)

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


class Progress:
  """Steps/s and ETA of the training loop, leaving out the time spent in
  `timed(...)` blocks (evaluation, checkpointing).

  A rate over the whole interval (clu's `ReportProgress`) shows a dip after
  each evaluation and a jump in the ETA; here that time is kept out of the
  rate. Call it after every step (`progress(step)`); every `every_steps`
  steps and at the last, `latest` gets the new `steps_per_second` and
  `eta_seconds` for the log line.
  """

  def __init__(self, *, first_step: int, num_train_steps: int,
               every_steps: int):
    self._num_train_steps = num_train_steps
    self._every_steps = every_steps
    self._previous_step = first_step
    self._previous_time = time.monotonic()
    # Seconds inside `timed` blocks, by name and in all (added to on the
    # timing thread too, hence the lock).
    self.time_per_part: dict[str, float] = {}
    self._timed = 0.0
    self._lock = threading.Lock()
    self._timed_at_report = 0.0
    # One thread: the measurements of the blocks finish in order.
    self._timer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self.latest: dict[str, float] = {}

  def __call__(self, step: int) -> None:
    if step == self._previous_step or (
        step % self._every_steps and step != self._num_train_steps):
      return
    t = time.monotonic()
    timed = self._timed
    busy = (t - self._previous_time) - (timed - self._timed_at_report)
    rate = (step - self._previous_step) / max(busy, 1e-9)
    self.latest = {
        "steps_per_second": rate,
        "eta_seconds": (self._num_train_steps - step) / max(rate, 1e-9)}
    self._previous_step, self._previous_time = step, t
    self._timed_at_report = timed

  @contextlib.contextmanager
  def timed(self, name: str, wait_jax_async_dispatch: bool = True
            ) -> Iterator[None]:
    """Adds the time of the block to `time_per_part[name]`.

    With `wait_jax_async_dispatch` (as clu's `ReportProgress.timed`), the
    time is the device's: from when the work dispatched before the block has
    finished to when the work dispatched inside it has, each found by a tiny
    computation queued behind it and waited for on the timing thread. The
    Python time of the block alone would count the training steps still
    queued on the device as evaluation.
    """
    if not wait_jax_async_dispatch:
      start = time.monotonic()
      try:
        yield
      finally:
        self._add(name, time.monotonic() - start)
      return
    started = self._timer.submit(_finished_at, _barrier(jnp.zeros(())))
    yield
    stop = _barrier(jnp.zeros(()))
    self._timer.submit(lambda: self._add(
        name, _finished_at(stop) - started.result()))

  def _add(self, name: str, seconds: float) -> None:
    with self._lock:
      self.time_per_part[name] = self.time_per_part.get(name, 0.0) + seconds
      self._timed += seconds


@jax.jit
def _barrier(x: jax.Array) -> jax.Array:
  """A computation queued behind all dispatched before it."""
  return x + 1


def _finished_at(barrier: jax.Array) -> float:
  barrier.block_until_ready()
  return time.monotonic()


class Profiler:
  """A device profile (`jax.profiler`) of `num_steps` steps from
  `first_step`, under LOGDIR/plugins/profile for TensorBoard's profile
  plugin. Call it after every step (`profile(step)`)."""

  def __init__(self, logdir: str, *, first_step: int, num_steps: int):
    self._logdir = logdir
    self._first_step = first_step
    self._num_steps = num_steps
    self._running = False

  def __call__(self, step: int) -> None:
    if step == self._first_step:
      try:
        jax.profiler.start_trace(self._logdir)
        self._running = True
      except Exception as e:  # noqa: BLE001 (a profile is never worth a run)
        logging.exception("Could not start profiling: %s", e)
    elif self._running and step >= self._first_step + self._num_steps:
      jax.profiler.stop_trace()
      self._running = False


def profiler(workdir: str, *, first_step: int, num_steps: int
             ) -> Profiler | None:
  """The device profile of `num_steps` steps from `first_step`; None when
  `num_steps` is 0 (the default: profiling costs time)."""
  if num_steps <= 0:
    return None
  return Profiler(workdir, first_step=first_step, num_steps=num_steps)


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
