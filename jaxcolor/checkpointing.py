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
"""

import json
from typing import Any, Callable

import jax
from absl import logging
import orbax.checkpoint as ocp
from etils import epath


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
      import grain  # noqa: PLC0415 (the step and its benchmark run without grain)
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
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      import grain  # noqa: PLC0415
    same_layout = data_iter is None or self._data_file(step).exists()
    if data_iter is not None and same_layout:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    elif data_iter is not None and restart_data_state is None:
      raise ValueError(
          f"The checkpoint at step {step} in {self.directory} was written by "
          f"another number of processes (no {self._data_file(step).name}); "
          "pass restart_data_state to resume its data iterator.")
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
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

  def _data_file(self, step: int) -> epath.Path:
    """Where grain keeps this process's data position of checkpoint `step`."""
    return (self.directory / str(step) / "data_iter" /
            f"process_{jax.process_index()}-of-{jax.process_count()}.json")

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s carrying the shardings to restore into."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_tree, shardings)
