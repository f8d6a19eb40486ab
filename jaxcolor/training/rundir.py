"""A run directory: its layout, the one writer of each file, and its locks.

  WORKDIR/
    config.json              the run's config (`write_config`, `read_config`)
    checkpoints/<step>/      Orbax: the state and the data position
                             (jaxcolor.training.checkpointing writes them here)
    metrics.jsonl            one JSON line of scalars per logged step
                             (`append_metrics`, `truncate_metrics_after`)
    eval/<step>.json         an evaluation's metrics (`write_eval`)
    eval/<step>/index.html   an evaluation run's report (jaxcolor.evaluation.report)
    eval/events.out.*        evaluation runs' TensorBoard scalars
    images/grid_<step>.png   gray | prediction | truth grids (`save_grid`)
    ab_prior.json            a*b* bin counts of the training photos
                             (jaxcolor.training.ab_prior; ab_bins generators)
    temperature.json         the decoding temperature chosen on the held-out
                             split (`write_temperature`, `read_temperature`)
    events.out.*             training's TensorBoard scalars and images
    .lock, .eval.lock        the training and the evaluation run's locks

Every file is written aside and renamed, so a kill leaves the old version or
the new one, never a cut one (metrics.jsonl is appended to; a line cut by a
kill is dropped on resume). Only process 0 of a multi-host run writes; the
callers decide (`is_primary`).

The locks: one live run per workdir.

Two training runs on the same workdir would both write checkpoints, metrics
and config.json, and Orbax would delete each other's checkpoints (each keeps
only its newest `keep_checkpoints`). `acquire(workdir)` takes
`fcntl.flock(LOCK_EX | LOCK_NB)` on WORKDIR/.lock and writes the holder's
pid, host and start time into it; a second run finds the lock taken and
fails at once with one line naming them.

Why flock and not a pid file: the kernel drops the lock when the holder's
file descriptor closes, which happens at any exit, SIGKILL and OOM kill
included. A run that died leaves `.lock` behind (with its old holder's
details), but no lock: the next run takes it without any clean-up, and no
pid has to be checked for liveness (pids are reused, and meaningless on
another host of a shared file system).

Scope:
  - Only process 0 of a multi-host run takes the lock: all processes of one
    run share the workdir legitimately.
  - Non-local workdirs (gs://, s3://, any 'scheme://') are not locked (no
    flock there); a note is logged. The same for a local file system that
    refuses flock (some FUSE mounts). On NFS, Linux implements flock with
    NFS byte-range locks, which do work across hosts.
  - Within one process, a second `acquire` of a workdir that process already
    holds succeeds (runs in one process are sequential: a notebook, or tests
    that train, fail and resume in-process). The jobs release their lock
    however they end (`try/finally`), an exception included.
  - Evaluation runs (`--mode=evaluate`) take a separate lock, EVAL_LOCK_NAME,
    not the training one: scoring the checkpoints of a run while it trains is
    intended (e.g. FID on saved checkpoints while training continues; the
    training loop writes eval/<step>.json before it saves checkpoint <step>,
    so an evaluation run's fuller results for a saved step come later and
    win). Two evaluation runs at once would interleave their eval/ files and
    reports, so they exclude each other.
"""

import datetime
import fcntl
import json
import math
import os
import socket
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from jaxcolor.core.errors import ConfigError
from jaxcolor.evaluation import image_grid

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
EVAL = "eval"
IMAGES = "images"
TEMPERATURE = "temperature.json"
LOCK_NAME = ".lock"
EVAL_LOCK_NAME = ".eval.lock"


class RunDir:
  """The paths of a run directory and the writers of its files."""

  def __init__(self, path: str | os.PathLike | epath.Path):
    self.path = epath.Path(path)

  def __str__(self) -> str:
    return str(self.path)

  @property
  def config_path(self) -> epath.Path:
    return self.path / CONFIG

  @property
  def checkpoint_dir(self) -> epath.Path:
    return self.path / CHECKPOINTS

  @property
  def metrics_path(self) -> epath.Path:
    return self.path / METRICS

  @property
  def eval_dir(self) -> epath.Path:
    return self.path / EVAL

  def eval_path(self, step: int) -> epath.Path:
    return self.eval_dir / f"{step}.json"

  def report_dir(self, step: int) -> epath.Path:
    return self.eval_dir / str(step)

  def grid_path(self, step: int) -> epath.Path:
    return self.path / IMAGES / f"grid_{step:07d}.png"

  # -- writers and readers ----------------------------------------------------

  def write_config(self, config: ml_collections.ConfigDict) -> None:
    """config.json, which colorize and evaluation runs rebuild the run from."""
    _write_text(self.config_path, config.to_json_best_effort(indent=2))

  def read_config(self) -> ml_collections.ConfigDict:
    """The run's config.json.

    Only its form is checked here (a JSON object); which fields a run needs
    depends on its system, so a missing one is named where the system is
    built from it (`colorize.Colorizer.from_workdir`).

    Raises:
      FileNotFoundError: not a run directory (no config.json).
      ConfigError: config.json is not JSON, or not an object of fields; the
        message names the file (and the line and column of a JSON error).
    """
    if not self.config_path.is_file():
      raise FileNotFoundError(f"{self.config_path} not found: is {self.path} "
                              "a jaxcolor run directory?")
    try:
      fields = json.loads(self.config_path.read_text())
    except UnicodeDecodeError:
      raise ConfigError(f"{self.config_path} is not valid JSON: it is not "
                        "UTF-8 text.") from None
    except json.JSONDecodeError as e:
      raise ConfigError(f"{self.config_path} is not valid JSON: line "
                        f"{e.lineno} column {e.colno} ({e.msg}).") from None
    if not isinstance(fields, dict):
      raise ConfigError(f"{self.config_path} is not a JSON object of config "
                        "fields.")
    return ml_collections.ConfigDict(fields)

  def write_eval(self, step: int, record: Mapping[str, Any]) -> epath.Path:
    """eval/<step>.json: {'step': step, **record}, non-finite numbers as
    strings. Training's periodic evaluations and evaluation runs both
    write it; the later one wins."""
    path = self.eval_path(step)
    plain = {"step": int(step), **{k: _plain(v) for k, v in record.items()}}
    _write_text(path, json.dumps(plain, indent=2))
    return path

  def write_temperature(self, record: Mapping[str, Any]) -> epath.Path:
    """temperature.json: the annealed-mean temperature chosen for the run
    ('temperature') and the held-out scores it was chosen by
    (jaxcolor/evaluation/temperature.py)."""
    path = self.path / TEMPERATURE
    _write_text(path, json.dumps(
        {k: _plain(v) for k, v in record.items()}, indent=2))
    return path

  def read_temperature(self) -> float | None:
    """The chosen temperature, or None where none was chosen.

    Raises:
      ConfigError: temperature.json is not JSON or holds no positive
        'temperature'; the message names the file.
    """
    path = self.path / TEMPERATURE
    if not path.exists():
      return None
    try:
      value = json.loads(path.read_text())["temperature"]
    except (ValueError, KeyError, TypeError):
      value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0 < value < float("inf")):
      raise ConfigError(f"{path}: no positive 'temperature' in it; delete it "
                        "or choose again (python -m jaxcolor.temperature).")
    return float(value)

  def read_eval(self, step: int) -> dict[str, Any] | None:
    """eval/<step>.json, or None where that step was not evaluated."""
    path = self.eval_path(step)
    return json.loads(path.read_text()) if path.exists() else None

  def save_grid(self, step: int, grid: np.ndarray) -> epath.Path:
    """images/grid_<step>.png from uint8 [H, W, 3]."""
    path = self.grid_path(step)
    image_grid.save_png(path, grid)
    return path

  def append_metrics(self, step: int, scalars: Mapping[str, Any]) -> None:
    """One line {'step': step, **scalars} of metrics.jsonl."""
    plain = {k: _plain(v) for k, v in scalars.items()}
    with self.metrics_path.open("a") as f:
      f.write(json.dumps({"step": int(step), **plain}) + "\n")

  def truncate_metrics_after(self, step: int) -> None:
    """Drops metrics.jsonl lines of steps after `step` (a resumed run logs
    them again) and lines cut by a kill."""
    if not self.metrics_path.exists():
      return
    kept = [line for line in self.metrics_path.read_text().splitlines()
            if _step_of(line) is not None and _step_of(line) <= step]
    _write_text(self.metrics_path, "".join(line + "\n" for line in kept))

  def read_metrics(self) -> list[dict[str, Any]]:
    """metrics.jsonl's lines, as dicts (a cut last line is left out)."""
    if not self.metrics_path.exists():
      return []
    return [json.loads(line) for line in self.metrics_path.read_text().splitlines()
            if _step_of(line) is not None]

  def lock(self, name: str = LOCK_NAME) -> "WorkdirLock":
    """`acquire(self.path, name=name)`: see the module docstring."""
    return acquire(self.path, name=name)


def _write_text(path: epath.Path, text: str) -> None:
  """`text` into `path`, written aside and renamed."""
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / (path.name + ".tmp")
  temporary.write_text(text)
  temporary.replace(path)


def _step_of(line: str) -> int | None:
  """The step of a JSON line; None for a blank line or one cut by a kill
  (SIGKILL can land in the middle of an append)."""
  try:
    return int(json.loads(line).get("step", 0)) if line.strip() else None
  except (ValueError, AttributeError):
    return None


def _plain(value: Any) -> Any:
  """A JSON value: 0-d arrays as numbers, non-finite floats as strings
  (JSON has no NaN or infinity; they stay visible)."""
  value = np.asarray(value).item() if np.ndim(value) == 0 else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


# -- locks ---------------------------------------------------------------------

# Lock files this process holds, by absolute path (see "Within one process").
_held: dict[str, "WorkdirLock"] = {}


class WorkdirLockedError(ConfigError):
  """Another live run holds the workdir; the message names it."""


class WorkdirLock:
  """A held lock (or a no-op stand-in where none is taken); `release()` it."""

  def __init__(self, path: str | None = None, fd: int | None = None):
    self.path, self._fd = path, fd

  @property
  def held(self) -> bool:
    return self._fd is not None

  def release(self) -> None:
    """Gives the workdir back (closing the file drops the flock)."""
    if self._fd is None:
      return
    _held.pop(self.path, None)
    os.close(self._fd)
    self._fd = None


def _holder() -> dict[str, Any]:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now(datetime.timezone.utc)
                     .isoformat(timespec="seconds")}


def _describe_holder(fd: int) -> str:
  try:
    holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    return (f"pid {holder['pid']} on host {holder['host']}, started "
            f"{holder['started']}")
  except (OSError, ValueError, KeyError, TypeError):  # Being written now.
    return "a process that has not yet recorded its pid"


def acquire(workdir: Any, *, name: str = LOCK_NAME,
            process_index: int | None = None) -> WorkdirLock:
  """Takes WORKDIR/<name> for this run (see module docstring).

  Args:
    workdir: an existing directory (str or epath.Path).
    name: LOCK_NAME for training, EVAL_LOCK_NAME for evaluation runs.
    process_index: this process's index (default: JAX's); only 0 locks.

  Returns:
    The lock, to `release()` when the run ends (the OS releases it at exit
    in any case); a no-op lock where none is taken.

  Raises:
    WorkdirLockedError: another live process holds it.
  """
  if process_index is None:
    process_index = jax.process_index()
  if process_index != 0:
    return WorkdirLock()
  workdir = str(workdir)
  if "://" in workdir:
    logging.info("Workdir %s is not on a local file system: it is not locked "
                 "against a second run; make sure only one run uses it.",
                 workdir)
    return WorkdirLock()
  path = os.path.abspath(os.path.join(workdir, name))
  if path in _held:
    return _held[path]
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _describe_holder(fd)
    os.close(fd)
    what = "an evaluation run" if name == EVAL_LOCK_NAME else "a run"
    raise WorkdirLockedError(
        f"Workdir {workdir} is in use by {what} of {holder} (lock file "
        f"{path}); wait for it to end, stop it, or choose another "
        "--workdir.") from None
  except OSError as e:  # The file system has no flock (some FUSE mounts).
    os.close(fd)
    logging.warning("Cannot lock %s (%s): the workdir is not protected "
                    "against a second run.", path, e)
    return WorkdirLock()
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps(_holder()).encode("utf-8") + b"\n", 0)
  lock = WorkdirLock(path, fd)
  _held[path] = lock
  return lock
