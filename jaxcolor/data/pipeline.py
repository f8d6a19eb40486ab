"""grain pipelines: endless training batches, one pass of evaluation batches.

Training, per process:

  MapDataset.source(train).seed(seed).shuffle().repeat()   # new order each epoch
    .map(DecodeAndResize)        # unusable file -> record without 'image'
    .map_with_index(_MarkRereads)  # events of later epochs are not counted
    .random_map(RandomCropFlip)  # rng derived from (seed, index): deterministic
    ProcessBlocks                # this host's block of every global batch
    .to_iter_dataset(ReadOptions)  [.mp_prefetch(worker_count)]
    _CountAndDrop                # counts events, drops records without image
    .batch(local_batch, drop_remainder)

Every stage is a grain dataset, so the returned iterator's get_state() /
set_state() (and `grain.checkpoint.CheckpointSave/Restore` with Orbax) resume
at exactly the next batch.

What happened to the files (`transforms.SKIP_KINDS`, `CONVERSION_KINDS`) is
counted after the worker processes, in the process that consumes the
batches, and kept in the iterator's state: `training_counts(iterator)` reads
the counts as of the last batch handed out (not of batches prefetched
ahead), and they are checkpointed and restored with the data position. Each
file counts once: in the first epoch of the stream, which every process
together reads exactly once, so the sum over processes is the number of
distinct files of each kind (final once the run is past its first epoch).
A resume onto another number of processes restarts the data position from
the step (`sharding.restart_state`) and the counts from zero.

Evaluation reads the first `num_images` records of the evaluation split in
order, center-cropped; a file that cannot be used keeps its slot with
`mask=False`, and every process yields the same number of batches (padded with
mask False), so a multi-host evaluation loop never waits on a missing batch.
Its counts are those of one pass (`EvalBatches.counts`).
"""

import collections
import dataclasses
import json
import math
from typing import Any

import grain
import numpy as np
from absl import logging

from jaxcolor.data import sharding, sources, transforms

# Decoding threads per process (per worker when worker_count > 0). Pillow
# releases the GIL while it decodes and resizes, so threads use several cores
# even with worker_count=0.
NUM_THREADS = 8

# Keys of the counts: files read, then each kind (a fixed order, so that
# processes can sum them as one vector).
FILES_READ = "files_read"
COUNT_KEYS = (FILES_READ,) + transforms.SKIP_KINDS + transforms.CONVERSION_KINDS
# Where `_CountAndDrop` keeps its counts in the iterator's state.
_STATE_KEY = "jaxcolor_data_counts"


def _new_counts() -> dict[str, int]:
  return dict.fromkeys(COUNT_KEYS, 0)


def _add_events(counts: dict[str, int], events: tuple[str, ...] | None) -> None:
  if events is None:  # A file read again in a later epoch.
    return
  counts[FILES_READ] += 1
  for event in events:
    counts[event] += 1


@dataclasses.dataclass(frozen=True)
class _MarkRereads(grain.transforms.MapWithIndex):
  """Clears the events of records past the first epoch (index >= num_files):
  a file is counted once, not once per epoch."""
  num_files: int

  def map_with_index(self, index: int, element: dict[str, Any]) -> dict[str, Any]:
    if index < self.num_files:
      return element
    return {**element, transforms.EVENTS: None}


class _CountAndDropIterator(grain.DatasetIterator):
  """Counts each record's events and passes on those with an image."""

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)
    self._counts = _new_counts()

  def __next__(self) -> dict[str, Any]:
    while True:
      element = next(self._parent)
      _add_events(self._counts, element.pop(transforms.EVENTS))
      if "image" in element:
        return element

  def get_state(self) -> dict[str, Any]:
    return {**self._parent.get_state(), _STATE_KEY: dict(self._counts)}

  def set_state(self, state: dict[str, Any]) -> None:
    state = dict(state)
    # A state without counts (`sharding.restart_state`) restarts them.
    self._counts = {**_new_counts(), **state.pop(_STATE_KEY, {})}
    self._parent.set_state(state)


class _CountAndDrop(grain.IterDataset):
  """Drops records without an image, counting every record's events in the
  iterator state (see the module docstring)."""

  def __iter__(self) -> _CountAndDropIterator:
    return _CountAndDropIterator(self._parent.__iter__())


def _counts_in_state(state: Any) -> dict[str, int]:
  if isinstance(state, bytes):  # jaxcolor.data.prefetch.DevicePrefetcher's form.
    state = json.loads(state)
  return {**_new_counts(), **state.get(_STATE_KEY, {})}


def training_counts(iterator: Any) -> dict[str, int]:
  """This process's counts of a training iterator, as of its last batch.

  `iterator`: from `create_train_iterator`, or anything whose `get_state()`
  returns that iterator's state (as a dict, or as JSON bytes, like
  `jaxcolor.data.prefetch.DevicePrefetcher`). Keys `COUNT_KEYS`: 'files_read'
  (distinct files read so far), then how many of them were skipped or
  converted, by kind.
  """
  return _counts_in_state(iterator.get_state())


def sum_over_processes(counts: dict[str, int]) -> dict[str, int]:
  """`counts` summed over all processes; every process must call it."""
  import jax  # noqa: PLC0415 (the pipeline itself needs no JAX)
  if jax.process_count() == 1:
    return dict(counts)
  from jax.experimental import multihost_utils  # noqa: PLC0415
  vector = np.array([counts.get(k, 0) for k in COUNT_KEYS], np.int32)
  total = np.asarray(multihost_utils.process_allgather(vector)).sum(axis=0)
  return {k: int(v) for k, v in zip(COUNT_KEYS, total)}


def count_scalars(counts: dict[str, int]) -> dict[str, int]:
  """`data/files_read`, `data/skipped` (all kinds) and one scalar per kind
  seen: `data/skipped_<why>`, `data/<conversion>` (e.g. data/upscaled)."""
  scalars = {f"data/{FILES_READ}": counts.get(FILES_READ, 0),
             "data/skipped": sum(counts.get(k, 0)
                                 for k in transforms.SKIP_KINDS)}
  for kind in transforms.SKIP_KINDS:
    if counts.get(kind):
      scalars[f"data/skipped_{kind}"] = counts[kind]
  for kind in transforms.CONVERSION_KINDS:
    if counts.get(kind):
      scalars[f"data/{kind}"] = counts[kind]
  return scalars


def describe_counts(counts: dict[str, int]) -> str:
  """One line: '120 files read; 3 skipped (corrupt 1, grayscale 2); ...'."""
  def listed(kinds):
    return ", ".join(f"{k.removeprefix('converted_')} {counts[k]:,}"
                     for k in kinds if counts.get(k))
  skipped = sum(counts.get(k, 0) for k in transforms.SKIP_KINDS)
  text = f"{counts.get(FILES_READ, 0):,} files read; {skipped:,} skipped"
  if skipped:
    text += f" ({listed(transforms.SKIP_KINDS)})"
  if listed(transforms.CONVERSION_KINDS):
    text += f"; converted: {listed(transforms.CONVERSION_KINDS)}"
  return text


class CountReport:
  """At each call: `count_scalars` of the counts summed over processes, and
  a log line when they changed since the previous call."""

  def __init__(self, title: str):
    self._title = title
    self._last: dict[str, int] | None = None

  def __call__(self, counts: dict[str, int]) -> dict[str, int]:
    counts = sum_over_processes(counts)
    if counts != self._last:
      logging.info("%s: %s.", self._title, describe_counts(counts))
      self._last = counts
    return count_scalars(counts)


def _process_layout(process_index: int | None,
                    process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # Only when the caller leaves the layout to JAX.
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in "
                     f"[0, process_count={process_count}).")
  return process_index, process_count


def _read_options(batch_size: int) -> grain.ReadOptions:
  # grain's default buffer (500 records) would decode far ahead of a small
  # batch; two batches keep the threads busy.
  return grain.ReadOptions(num_threads=NUM_THREADS,
                           prefetch_buffer_size=max(2 * batch_size, 16))


def _check_usable(source: Any, decode: transforms.DecodeAndResize,
                  name: str, split: str, num_records: int | None = None) -> None:
  """Fails fast when no record of the first `num_records` (default: all)
  decodes: the endless, filtered training stream would search forever, and an
  evaluation would fail after training. Normally reads one file."""
  total = len(source) if num_records is None else min(num_records, len(source))
  if total == 0:
    raise sources.NoUsableImagesError(f"Dataset {name} has no {split} images.")
  events = collections.Counter()
  for index in range(total):
    record = decode.map(source[index])
    if "image" in record:
      return
    events[record[transforms.EVENTS][0]] += 1
  reasons = ", ".join(f"{k} {v}" for k, v in sorted(events.items()))
  hint = ("; grayscale images have no color to learn"
          if "grayscale" in events else "")
  where = getattr(source, "root", None)
  files = "the only file was" if total == 1 else f"all {total} files were"
  raise sources.NoUsableImagesError(
      f"Dataset {name} has no usable {split} image"
      f"{f' in {where}' if where is not None else ''}: {files} skipped "
      f"({reasons}){hint}.")


def create_train_iterator(dataset: str, *, image_size: int,
                          global_batch_size: int, seed: int,
                          data_dir: str | None = None, worker_count: int = 0,
                          process_index: int | None = None,
                          process_count: int | None = None,
                          resize_scale: float = 1.0
                          ) -> grain.DatasetIterator:
  """Endless, shuffled, augmented training batches for this process.

  Args:
    dataset: a dataset string (see `jaxcolor.data.sources`).
    image_size: side of the square crops.
    global_batch_size: images per step over all processes.
    seed: same seed, same batches (and different seeds, different ones).
    data_dir: TFDS data folder (TFDS datasets only).
    worker_count: grain worker processes (0: threads in this process).
      Workers need absl flags parsed: start them under `absl.app.run`.
    process_index, process_count: this host's place; default from JAX.
    resize_scale: the shorter side is resized to round(image_size *
      resize_scale) before the random crop: 1 crops from the whole
      (shorter) side; Isola et al.'s random jitter resizes 256 px crops'
      images to 286 px first (286 / 256).

  Returns:
    A checkpointable grain iterator of dicts: 'image' uint8
    [local_batch, image_size, image_size, 3] and, for labelled datasets,
    'label' int32 [local_batch], local_batch = global_batch_size /
    process_count. `training_counts(iterator)` says what was skipped.

  Raises:
    sources.NoUsableImagesError: no training file can be used.
  """
  process_index, process_count = _process_layout(process_index, process_count)
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible "
                     f"by process_count={process_count}.")
  local_batch = global_batch_size // process_count
  data = sources.open_dataset(dataset, data_dir)
  if not resize_scale >= 1.0:
    raise ValueError(f"resize_scale={resize_scale!r}: at least 1 (the crop "
                     "must fit in the resized image).")
  decode = transforms.DecodeAndResize(round(image_size * resize_scale),
                                      drop_grayscale=True)
  _check_usable(data.train, decode, data.name, "training")

  records = (grain.MapDataset.source(data.train).seed(seed).shuffle().repeat()
             .map(decode)
             .map_with_index(_MarkRereads(len(data.train)))
             .random_map(transforms.RandomCropFlip(image_size)))
  # Global batches independent of the number of hosts: see data/sharding.py.
  records = sharding.ProcessBlocks(records, local_batch=local_batch,
                                   process_index=process_index,
                                   process_count=process_count)
  stream = records.to_iter_dataset(_read_options(local_batch))
  if worker_count > 0:
    stream = stream.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count))
  stream = _CountAndDrop(stream).batch(local_batch, drop_remainder=True)
  return iter(stream)


def _empty_batch(batch_size: int, image_size: int,
                 has_labels: bool) -> dict[str, np.ndarray]:
  batch = {"image": np.zeros((batch_size, image_size, image_size, 3), np.uint8),
           "mask": np.zeros((batch_size,), np.bool_)}
  if has_labels:
    batch["label"] = np.zeros((batch_size,), np.int32)
  return batch


def _pad(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  missing = batch_size - len(batch["mask"])
  if not missing:
    return batch
  return {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}


class EvalBatches:
  """Iterator of one pass of evaluation batches (see `create_eval_batches`)
  that counts what happened to the files it read."""

  def __init__(self, records: grain.IterDataset, *, num_batches: int,
               batch_size: int, image_size: int, has_labels: bool):
    self._records = records.map(self._count).batch(batch_size,
                                                   drop_remainder=False)
    self._stream = None  # Started by the first batch asked for.
    self._num_batches, self._yielded = num_batches, 0
    self._batch_size, self._image_size = batch_size, image_size
    self._has_labels = has_labels
    self._counts = _new_counts()

  def __iter__(self) -> "EvalBatches":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._stream is None:
      self._stream = iter(self._records)
    batch = next(self._stream, None)
    if batch is None:
      if self._yielded >= self._num_batches:
        raise StopIteration
      batch = _empty_batch(self._batch_size, self._image_size,
                           self._has_labels)
    else:
      batch = _pad(batch, self._batch_size)
    self._yielded += 1
    return batch

  def _count(self, element: dict[str, Any]) -> dict[str, Any]:
    # In the consuming thread (grain maps after `to_iter_dataset` run there).
    _add_events(self._counts, element.pop(transforms.EVENTS))
    return element

  def counts(self) -> dict[str, int]:
    """This process's counts of the files read so far (all of its share
    once the pass is over), keys `COUNT_KEYS`."""
    return dict(self._counts)

  def count_scalars(self) -> dict[str, int]:
    """`count_scalars` of the counts of every process (all must call it)."""
    return count_scalars(sum_over_processes(self._counts))


def eval_batches_of(config: Any) -> "EvalBatches":
  """`create_eval_batches` of a validated config's evaluation split, as the
  training loop, the evaluation job and the temperature sweep all read it."""
  return create_eval_batches(
      sources.eval_dataset_of(config), image_size=config.image_size,
      batch_size=config.eval_batch_size, data_dir=config.data_dir or None,
      num_images=config.num_eval_images if config.num_eval_images > 0 else None)


def create_eval_batches(dataset: str, *, image_size: int, batch_size: int,
                        num_images: int | None, data_dir: str | None = None,
                        process_index: int | None = None,
                        process_count: int | None = None) -> EvalBatches:
  """One deterministic pass over this process's share of the evaluation split.

  Args:
    num_images: evaluate the first num_images records of the split (None:
      all of them), shared across processes.

  Returns:
    An `EvalBatches` iterator of dicts with 'image' uint8 [batch_size,
    image_size, image_size, 3], 'mask' bool [batch_size] (True: a real
    image; False: padding, or a file that could not be used or is
    grayscale) and, for labelled datasets, 'label' int32 [batch_size].
    Every process yields the same number of batches.

  Raises:
    sources.NoUsableImagesError: none of the images to evaluate can be used
      (checked at once, so that a training run fails before it compiles).
  """
  process_index, process_count = _process_layout(process_index, process_count)
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be positive.")
  data = sources.open_dataset(dataset, data_dir)
  total = len(data.eval) if num_images is None else min(num_images,
                                                        len(data.eval))
  decode = transforms.DecodeAndResize(image_size, drop_grayscale=True)
  _check_usable(data.eval, decode, data.name, "evaluation", total)
  num_batches = math.ceil(math.ceil(total / process_count) / batch_size)
  records = (grain.MapDataset.source(data.eval)[:total]
             [process_index::process_count]
             .map(decode)
             .map(transforms.CenterCropWithMask(image_size, data.has_labels)))
  return EvalBatches(records.to_iter_dataset(_read_options(batch_size)),
                     num_batches=num_batches, batch_size=batch_size,
                     image_size=image_size, has_labels=data.has_labels)
