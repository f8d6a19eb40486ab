"""Feeding the device: host batches become global sharded arrays ahead of use.

`DevicePrefetcher` keeps `size` batches already transferred while the current
step runs (JAX dispatch is asynchronous, so the copy overlaps the step). Its
checkpoint state is the wrapped iterator's state after the last batch handed
out, not after the batches waiting in the buffer, so a restored run continues
with exactly the batch that followed the saved step.
"""

import collections
import json
from typing import Any, Iterator

from jax.sharding import Mesh

from jaxcolor.core import parallel


class DevicePrefetcher:
  """Iterator of global device batches with grain-compatible checkpointing.

  It has `get_state() -> bytes` and `set_state(bytes)`, which is what
  `grain.checkpoint.CheckpointSave/Restore` call, so Orbax saves it with the
  train state.
  """

  def __init__(self, host_iterator: Any, mesh: Mesh, size: int = 2):
    self._iterator = host_iterator
    self._mesh = mesh
    self._size = size
    self._buffer: collections.deque = collections.deque()
    self._state = host_iterator.get_state()

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    while len(self._buffer) < self._size + 1:
      host_batch = next(self._iterator)
      self._buffer.append((parallel.global_batch(host_batch, self._mesh),
                           self._iterator.get_state()))
    batch, self._state = self._buffer.popleft()
    return batch

  def get_state(self) -> bytes:
    return json.dumps(self._state).encode()

  def set_state(self, state: bytes) -> None:
    self._buffer.clear()
    self._state = json.loads(state)
    self._iterator.set_state(self._state)

  def start_prefetch(self) -> None:
    """Called by grain's checkpoint handler after a restore; nothing to do."""
