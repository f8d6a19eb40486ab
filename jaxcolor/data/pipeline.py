"""grain pipelines: endless training batches, one pass of evaluation batches.

Training, per process:

  MapDataset.source(train).seed(seed).shuffle().repeat()   # new order each epoch
    .map(DecodeAndResize)        # unusable file -> record without 'image'
    .random_map(RandomCropFlip)  # rng derived from (seed, index): deterministic
    ProcessBlocks                # this host's block of every global batch
    .to_iter_dataset(ReadOptions)  [.mp_prefetch(worker_count)]
    .map(count events) .filter(has image) .batch(local_batch, drop_remainder)

Every stage is a grain dataset, so the returned iterator's get_state() /
set_state() (and `grain.checkpoint.CheckpointSave/Restore` with Orbax) resume
at exactly the next batch. Events are counted after the worker processes, in
the process that consumes the batches, so `skipped_counts()` sees them all.

Evaluation reads the first `num_images` records of the evaluation split in
order, centre-cropped; a file that cannot be used keeps its slot with
`mask=False`, and every process yields the same number of batches (padded with
mask False), so a multi-host evaluation loop never waits on a missing batch.
"""

import collections
import math
import threading
from typing import Any, Iterator

import grain
import numpy as np

from jaxcolor.data import sharding, sources, transforms

# Decoding threads per process (per worker when worker_count > 0). Pillow
# releases the GIL while it decodes and resizes, so threads use several cores
# even with worker_count=0.
NUM_THREADS = 8

_counts: collections.Counter[str] = collections.Counter()
_counts_lock = threading.Lock()


def skipped_counts() -> dict[str, int]:
  """Images skipped or converted so far in this process, by kind.

  Skips: 'corrupt', 'empty', 'not_an_image', 'unreadable', 'too_large',
  'grayscale'. Conversions (the image is used): 'converted_cmyk',
  'converted_palette', 'converted_alpha', 'converted_16bit',
  'converted_other', 'exif_rotated', 'upscaled'. Counted when a record is
  consumed, so a file counts again in every epoch that reads it.
  """
  with _counts_lock:
    return dict(_counts)


def _count_events(element: dict[str, Any]) -> dict[str, Any]:
  events = element.get(transforms.EVENTS, ())
  if events:
    with _counts_lock:
      _counts.update(events)
  return {k: v for k, v in element.items() if k != transforms.EVENTS}


def _has_image(element: dict[str, Any]) -> bool:
  return "image" in element


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
                  name: str) -> None:
  """Fails fast when no training record decodes: the endless, filtered
  training stream would otherwise search forever. Normally reads one file."""
  if len(source) == 0:
    raise ValueError(f"Dataset {name} has no training images.")
  events = collections.Counter()
  for index in range(len(source)):
    record = decode.map(source[index])
    if "image" in record:
      return
    events[record[transforms.EVENTS][-1]] += 1
  raise ValueError(f"Dataset {name} has no usable training image: all "
                   f"{len(source)} files were skipped ({dict(events)}).")


def create_train_iterator(dataset: str, *, image_size: int,
                          global_batch_size: int, seed: int,
                          data_dir: str | None = None, worker_count: int = 0,
                          process_index: int | None = None,
                          process_count: int | None = None
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

  Returns:
    A checkpointable grain iterator of dicts: 'image' uint8
    [local_batch, image_size, image_size, 3] and, for labelled datasets,
    'label' int32 [local_batch], local_batch = global_batch_size /
    process_count.
  """
  process_index, process_count = _process_layout(process_index, process_count)
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible "
                     f"by process_count={process_count}.")
  local_batch = global_batch_size // process_count
  data = sources.open_dataset(dataset, data_dir)
  decode = transforms.DecodeAndResize(image_size, drop_grayscale=True)
  _check_usable(data.train, decode, data.name)

  records = (grain.MapDataset.source(data.train).seed(seed).shuffle().repeat()
             .map(decode)
             .random_map(transforms.RandomCropFlip(image_size)))
  # Global batches independent of the number of hosts: see data/sharding.py.
  records = sharding.ProcessBlocks(records, local_batch=local_batch,
                                   process_index=process_index,
                                   process_count=process_count)
  stream = records.to_iter_dataset(_read_options(local_batch))
  if worker_count > 0:
    stream = stream.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count))
  stream = (stream.map(_count_events).filter(_has_image)
            .batch(local_batch, drop_remainder=True))
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


def create_eval_batches(dataset: str, *, image_size: int, batch_size: int,
                        num_images: int | None, data_dir: str | None = None,
                        process_index: int | None = None,
                        process_count: int | None = None
                        ) -> Iterator[dict[str, np.ndarray]]:
  """One deterministic pass over this process's share of the evaluation split.

  Args:
    num_images: evaluate the first num_images records of the split (None:
      all of them), shared across processes.

  Yields:
    dicts with 'image' uint8 [batch_size, image_size, image_size, 3], 'mask'
    bool [batch_size] (True: a real image; False: padding, or a file that
    could not be used or is grayscale) and, for labelled datasets, 'label'
    int32 [batch_size]. Every process yields the same number of batches.
  """
  process_index, process_count = _process_layout(process_index, process_count)
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be positive.")
  data = sources.open_dataset(dataset, data_dir)
  total = len(data.eval) if num_images is None else min(num_images,
                                                        len(data.eval))
  num_batches = math.ceil(math.ceil(total / process_count) / batch_size)
  records = (grain.MapDataset.source(data.eval)[:total]
             [process_index::process_count]
             .map(transforms.DecodeAndResize(image_size, drop_grayscale=True))
             .map(transforms.CenterCropWithMask(image_size, data.has_labels)))
  stream = (records.to_iter_dataset(_read_options(batch_size))
            .map(_count_events).batch(batch_size, drop_remainder=False))

  def batches() -> Iterator[dict[str, np.ndarray]]:
    yielded = 0
    for batch in stream:
      yield _pad(batch, batch_size)
      yielded += 1
    for _ in range(num_batches - yielded):
      yield _empty_batch(batch_size, image_size, data.has_labels)

  return batches()


def describe(dataset: str, data_dir: str | None = None) -> dict[str, Any]:
  """Name, split sizes (files or records, before any is skipped), labels."""
  data = sources.open_dataset(dataset, data_dir)
  return {"name": data.name, "num_train": len(data.train),
          "num_eval": len(data.eval), "has_labels": data.has_labels,
          "num_classes": data.num_classes}
