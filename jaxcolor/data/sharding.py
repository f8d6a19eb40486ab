"""How the training stream is split over host processes, and how a position
in it carries over to another number of processes.

Global batch k is records [k * B, (k + 1) * B) of one shuffled, augmented
stream, whatever the number of processes P: process i reads the i-th
contiguous block of b = B / P records of every global batch,

    process i, local record m  <-  stream[(m // b) * B + i * b + m % b],

and `jax.make_array_from_process_local_data` stacks the blocks in process
order. The global batch, rows in order, is therefore the same on one host
and on many, so a run's numbers do not depend on how many hosts ran it (up to
the order of floating-point sums), and a checkpoint resumes on another number
of hosts at the same batch. (Strided sharding, `stream[i::P]`, would give each
global batch the same images in another row order, and dropout masks, drawn
per row, would then fall on other images.) Random crops and flips are drawn
before the split, from the record's place in the stream, for the same reason.

A file that cannot be used (corrupt, grayscale) is dropped by the process
that read it, which takes its next record instead; from then on the batches
of different process counts differ slightly.
"""

from typing import Any

import grain


class ProcessBlocks(grain.MapDataset):
  """Process `process_index`'s records of `parent` (see the module docstring)."""

  def __init__(self, parent: grain.MapDataset, *, local_batch: int,
               process_index: int, process_count: int):
    super().__init__(parent)
    if local_batch < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"local_batch={local_batch}, process_index="
                       f"{process_index}, process_count={process_count}.")
    self._local_batch = local_batch
    self._process_index = process_index
    self._process_count = process_count

  def __len__(self) -> int:
    return len(self._parent) // self._process_count

  def parent_index(self, index: int) -> int:
    block, offset = divmod(index, self._local_batch)
    return ((block * self._process_count + self._process_index)
            * self._local_batch + offset)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.parent_index(index)]

  def __str__(self) -> str:
    return (f"ProcessBlocks(local_batch={self._local_batch}, process="
            f"{self._process_index} of {self._process_count})")


def restart_state(step: int, *, global_batch_size: int,
                  process_count: int) -> dict[str, Any]:
  """This process's training-iterator state after `step` global batches.

  For resuming a checkpoint written by another number of processes: grain
  stores one position per process, in that process's own records, which
  another layout cannot use; the position after `step` batches is the same
  block of the stream for every layout. Exact unless files were skipped
  before `step` (then up to that many images are read again). Valid for the
  in-process iterator (`worker_count=0`), whose state is its next index.
  """
  return {"next_index": step * (global_batch_size // process_count)}
