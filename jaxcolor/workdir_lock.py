"""One live run per workdir: an exclusive lock held for the run's life.

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
    that train, fail and resume in-process). A run that raises keeps its lock
    until its process exits or trains there again.
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
import os
import socket
from typing import Any

import jax
from absl import logging

from jaxcolor import configuration

LOCK_NAME = ".lock"
EVAL_LOCK_NAME = ".eval.lock"

# Lock files this process holds, by absolute path (see "Within one process").
_held: dict[str, "WorkdirLock"] = {}


class WorkdirLockedError(configuration.ConfigError):
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
