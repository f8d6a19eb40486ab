"""Orbax checkpoints of the train state together with the data iterator.

Saves are asynchronous (training continues while the arrays are written) and
atomic: Orbax writes into a temporary directory and renames it when complete,
so a kill at any moment leaves only whole checkpoints. The newest
`keep_checkpoints` are kept.
"""

from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  """Saves and restores `{'state': pytree, 'data_iter': iterator}` by step."""

  def __init__(self, directory: str | epath.Path, *, keep: int,
               save_every_steps: int = 1, asynchronous: bool = True):
    self.directory = epath.Path(directory)
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
              data_iter: Any | None = None) -> Any:
    """The state at `step`, laid out as `abstract_state`'s shardings.

    `data_iter`, when given, is moved in place to where it was at `step`.
    """
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s carrying the shardings to restore into."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_tree, shardings)
