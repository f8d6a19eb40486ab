"""Orbax checkpoints of the train state together with the data iterator.

Saves are asynchronous (training continues while the arrays are written) and
atomic: Orbax writes into a temporary directory and renames it when complete,
so a kill at any moment leaves only whole checkpoints. The newest
`keep_checkpoints` are kept.

Every process takes part in saving and restoring (Orbax writes each array
once, the primary process writes the metadata); grain writes one data
position per process, `data_iter/process_<i>-of-<n>.json`. A checkpoint
restores onto another number of processes (e.g. written by one host with 8
devices, continued on 2 hosts): the arrays are laid out afresh, and the data
position, which the new layout cannot read from the old per-process files,
is recomputed from the step (`restart_data_state`).

Every restore first compares the checkpoint's metadata (array names and
shapes) with the state the config builds (`check_fits`), so a config that
does not match its workdir is named in one line: the first differing array
and both shapes.

A damaged checkpoint (a file cut short by a full disk or a failed copy, a
file removed) is named in one line too, `DamagedCheckpointError`: "checkpoint
N is damaged (<its folder>): <what could not be read>". Once `check_fits`
has passed, the arrays the checkpoint lists are the ones the config wants,
so a file that then cannot be read (an I/O or TensorStore error) is the
files' fault, not the config's.
"""

import gc
import json
import logging as python_logging
import re
import sys
import threading
import warnings
from typing import Any, Callable

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from jaxcolor.core.errors import ConfigError
from jaxcolor.training import rundir


class CheckpointMismatchError(ConfigError):
  """A checkpoint whose arrays do not fit the state the config builds."""


class DamagedCheckpointError(ConfigError):
  """A checkpoint whose files are missing or cut short; the message names
  its step folder and what could not be read.

  A ConfigError, as the other faults of a workdir a user is to read, so that
  every entry point prints it as one line and exits 2, and
  `experiment.restore` passes it on unchanged; said as an error of the
  files, not of the configuration.
  """
  label = "Error"


class Checkpointer:
  """Saves and restores `{'state': pytree, 'data_iter': iterator}` by step."""

  def __init__(self, directory: str | epath.Path, *, keep: int,
               save_every_steps: int = 1, asynchronous: bool = True):
    # Orbax's array store needs an absolute path (a relative one fails in
    # the background save thread, and no checkpoint appears).
    self.directory = epath.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every_steps,
            enable_async_checkpointing=asynchronous, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iter: Any | None = None, *,
           force: bool = False) -> bool:
    """Starts saving `state` (and the iterator) at `step`; returns if it saves."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    return self._manager.save(step, args=ocp.args.Composite(**items),
                              force=force)

  def restore(self, step: int, abstract_state: Any,
              data_iter: Any | None = None, *,
              restart_data_state: Callable[[int], Any] | None = None) -> Any:
    """The state at `step`, laid out as `abstract_state`'s shardings.

    `data_iter`, when given, is moved in place to where it was at `step`.
    When the checkpoint was written by another number of processes, its
    state becomes `restart_data_state(step)` instead (the iterator state of
    this process after `step` steps); without it that restore fails.
    """
    self.check_fits(step, abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    same_layout = data_iter is None or self._data_file(step).exists()
    if data_iter is not None and same_layout:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    elif data_iter is not None and restart_data_state is None:
      raise ValueError(
          f"The checkpoint at step {step} in {self.directory} was written by "
          f"another number of processes (no {self._data_file(step).name}); "
          "pass restart_data_state to resume its data iterator.")
    _quiet_abandoned_reads()
    try:
      restored = self._manager.restore(step,
                                       args=ocp.args.Composite(**items))
    except Exception as e:  # noqa: BLE001 (TensorStore raises bare Exception)
      _collect_abandoned_reads()
      reason = _read_failure(e)
      if reason is None:
        raise
      raise self._damaged(step, reason) from e
    if not same_layout:
      logging.warning(
          "Checkpoint %d was written by another number of processes than %d: "
          "the data iterator restarts at the position of step %d.", step,
          jax.process_count(), step)
      state = restart_data_state(step)
      # grain's own iterators take the dict; others (the device prefetcher)
      # the JSON bytes, as grain's Orbax handler passes them.
      data_iter.set_state(state if isinstance(data_iter, grain.DatasetIterator)
                          else json.dumps(state).encode())
    return restored["state"]

  def stored_target(self, step: int, sharding: Any) -> Any:
    """The state of checkpoint `step` as stored (its own shapes and dtypes),
    every array with `sharding`: to read a checkpoint whose config is not
    at hand (e.g. a classify run's ResNet-18 for the backbone)."""
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
        self._stored_tree(step))

  def check_fits(self, step: int, abstract_state: Any) -> None:
    """Checks the checkpoint's array names and shapes against the state's.

    Reads only the checkpoint's metadata (no array), so a run started with
    another config than the one that wrote its workdir stops before it
    writes or compiles anything, with a readable difference instead of
    Orbax's restore error.

    Raises:
      CheckpointMismatchError: naming the checkpoint, the first array whose
        shape differs (parameters first) with both shapes, and the arrays
        that only one side has.
    """
    stored = _array_shapes(self._stored_tree(step))
    wanted = _array_shapes(
        ocp.tree.serialize_tree(abstract_state, keep_empty_nodes=True))
    differ = [p for p in wanted if p in stored and stored[p] != wanted[p]]
    missing = [p for p in wanted if p not in stored]
    extra = [p for p in stored if p not in wanted]
    if not (differ or missing or extra):
      return
    problems = []
    if differ:
      first = differ[0]
      problems.append(
          f"{first} is {stored[first]} in the checkpoint but {wanted[first]} "
          "in this config"
          + (f" ({len(differ) - 1} more arrays differ)" if len(differ) > 1
             else ""))
    if missing:
      problems.append(f"{len(missing)} array(s) of this config are not in "
                      f"the checkpoint, first {missing[0]}")
    if extra:
      problems.append(f"{len(extra)} array(s) of the checkpoint are not in "
                      f"this config, first {extra[0]}")
    run_config = self.directory.parent / rundir.CONFIG
    raise CheckpointMismatchError(
        f"The checkpoint at step {step} in {self.directory} does not fit "
        f"this config: {'; '.join(problems)}. Use the config the run was "
        f"started with (its workdir keeps it: {run_config}), or another "
        "--workdir.")

  def _stored_tree(self, step: int) -> Any:
    """The metadata tree (shapes, dtypes) of checkpoint `step`'s state."""
    _quiet_abandoned_reads()  # It reads the arrays' own metadata too.
    handler = ocp.StandardCheckpointHandler()
    state = self.directory / str(step) / "state"
    try:
      metadata = handler.metadata(state)
    except (OSError, ValueError, KeyError, TypeError) as e:
      # The metadata is the first file of a step that is read: missing
      # (FileNotFoundError) or cut short (a JSON error) it is damage.
      _collect_abandoned_reads()
      if not (state / "_METADATA").exists():
        reason = "state/_METADATA is missing"
      elif isinstance(e, json.JSONDecodeError):
        reason = f"state/_METADATA is cut short or not JSON ({e})"
      else:
        reason = _short_reason(e)
      raise self._damaged(step, reason) from e
    finally:
      handler.close()
    return getattr(metadata, "tree", metadata)

  def _damaged(self, step: int, reason: str) -> DamagedCheckpointError:
    folder = self.directory / str(step)
    return DamagedCheckpointError(
        f"checkpoint {step} is damaged ({folder}): "
        f"{reason.replace(str(folder) + '/', '')}. Replace it from a copy, "
        "or remove it to fall back on an earlier step.")

  def _data_file(self, step: int) -> epath.Path:
    """Where grain keeps this process's data position of checkpoint `step`."""
    return (self.directory / str(step) / "data_iter" /
            f"process_{jax.process_index()}-of-{jax.process_count()}.json")

  def reached_preemption(self, step: int) -> bool:
    """Whether `step` is the step at which every process agreed to save
    after a preemption notice (SIGTERM) reached any of them.

    JAX's preemption service (started by `jax.distributed.initialize`)
    agrees on it: the step after the furthest one any process had reached.
    Call it after every step on every process, from the same first step.
    Always False without `jax.distributed`. Cheap: a lock and a comparison.
    """
    return self._manager.reached_preemption(step)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _array_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'generator/params/down_1/kernel': shape} of a state's arrays,
  parameters first (the most telling difference is named first)."""
  flat = {"/".join(map(str, path)): tuple(leaf.shape)
          for path, leaf in ocp.tree.to_flat_dict(tree).items()
          if hasattr(leaf, "shape")}
  rank = lambda path: (0 if "/params/" in f"/{path}/" else
                       1 if "/batch_stats/" in f"/{path}/" else 2)
  return dict(sorted(flat.items(), key=lambda item: rank(item[0])))


# TensorStore's errors: 'OUT_OF_RANGE: Error reading "..." ...' (an absl
# status code first), then its location and spec, which name nothing the
# user can act on.
_STATUS = re.compile(r"^[A-Z][A-Z_]{3,}: ")
_CLUTTER = (re.compile(r" in OCDBT database at [^\"]*\"[^\"]*\""),
            re.compile(r" \[tensorstore_spec=.*", re.DOTALL),
            re.compile(r"\s*See full TensorStore details.*", re.DOTALL))


def _read_failure(error: BaseException) -> str | None:
  """The reason a restore failed when its files could not be read (an
  OSError or a TensorStore status error anywhere in the chain of causes);
  None for any other failure."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) or _STATUS.match(str(seen)):
      return _short_reason(seen)
    seen = seen.__cause__ or seen.__context__
  return None


def _short_reason(error: BaseException) -> str:
  """The first line of `error`'s message without TensorStore's spec."""
  text = str(error)
  for clutter in _CLUTTER:
    text = clutter.sub("", text)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  line = lines[0] if lines else type(error).__name__
  return line if len(line) <= 300 else line[:297] + "..."


_quiet_lock = threading.Lock()


def _quiet_abandoned_reads() -> None:
  """Drops the reports of the reads a failed restore abandons.

  When one array of a restore cannot be read, Orbax closes its asyncio
  event loop while TensorStore still completes the other reads; each
  completion then calls `loop.call_soon_threadsafe` on the closed loop, and
  each abandoned read coroutine of Orbax's fails again when it is
  collected. Both go to `sys.unraisablehook`, and the futures of the other
  failed reads, never awaited, to asyncio's log: dozens of tracebacks
  around the one-line error, some of them after it. Only those are dropped
  (the hook and the log filter are installed once per process); everything
  else reaches the previous hook and the log.
  """
  with _quiet_lock:
    previous = sys.unraisablehook
    if getattr(previous, "_jaxcolor_quiet", False):
      return
    python_logging.getLogger("asyncio").addFilter(_not_an_abandoned_read)

    def hook(unraisable):
      closed_loop = (isinstance(unraisable.exc_value, RuntimeError)
                     and str(unraisable.exc_value) == "Event loop is closed")
      code = getattr(unraisable.object, "cr_code", None)
      abandoned = code is not None and "/orbax/" in code.co_filename
      if not (closed_loop or abandoned):
        previous(unraisable)

    hook._jaxcolor_quiet = True  # noqa: SLF001
    sys.unraisablehook = hook


def _not_an_abandoned_read(record: python_logging.LogRecord) -> bool:
  """False for asyncio's "Future exception was never retrieved" of a read
  that TensorStore failed (the filter above)."""
  error = record.exc_info[1] if record.exc_info else None
  while error is not None:
    if _STATUS.match(str(error)):
      return "never retrieved" not in record.getMessage()
    error = error.__cause__ or error.__context__
  return True


def _collect_abandoned_reads() -> None:
  """Finalizes the read coroutines a failed restore abandons (hundreds, in
  reference cycles) now, while the hook above drops their reports. Left to
  the interpreter's exit, some are finalized after the hook is gone, and
  each prints its traceback under the one-line error."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "coroutine .* was never awaited",
                            RuntimeWarning)
    gc.collect()


def abstract_with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s carrying the shardings to restore into."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_tree, shardings)
