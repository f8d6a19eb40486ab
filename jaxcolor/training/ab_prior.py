"""The training photos' a*b* bin prior, for the class rebalancing of a
generator that predicts colour as a distribution (core/ab_bins.py).

`estimate` reads `PRIOR_IMAGES` training crops (the run's own pipeline,
seed and crop size, every process the same ones: the whole dataset as one
process sees it), averages their a*b* over the blocks the network predicts
one distribution for, and counts the nearest bin of each block. The counts
go to WORKDIR/ab_prior.json (`python -m jaxcolor.ab_prior`, or the first
step of a training run that has none) and into the run's state as weights,
so the run keeps them when it resumes, whatever happens to the file.
"""

import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jaxcolor import data
from jaxcolor.core import ab_bins
from jaxcolor.core import color_space
from jaxcolor.core.errors import ConfigError

FILE_NAME = "ab_prior.json"
MAX_BYTES = 1 << 20
PRIOR_IMAGES = 2048  # Crops counted: 2,048 x (128 / 4)^2 = 2.1 M blocks at 128 px.


def estimate(config: ml_collections.ConfigDict, block: int,
             num_images: int = PRIOR_IMAGES) -> np.ndarray:
  """Bin counts [Q] (float64) of `num_images` training crops of `config`,
  their a*b* averaged over `block` x `block` pixels."""
  batches = data.create_train_iterator(
      config.dataset, image_size=config.image_size,
      global_batch_size=config.batch_size, seed=config.seed,
      data_dir=config.data_dir or None, worker_count=0, process_index=0,
      process_count=1, resize_scale=config.train_resize_scale)

  @jax.jit
  def counts_of(images):
    _, ab = color_space.split_lab(images)
    blocks = ab_bins.block_mean(color_space.net_to_ab(ab), block)
    return jnp.bincount(ab_bins.nearest_bin(blocks).reshape(-1),
                        length=ab_bins.num_bins())

  total = np.zeros(ab_bins.num_bins(), np.float64)
  steps = math.ceil(num_images / config.batch_size)
  start = time.monotonic()
  for step in range(steps):
    total += np.asarray(counts_of(next(batches)["image"]))
    if (step + 1) % 25 == 0 or step + 1 == steps:
      logging.info("a*b* prior: %d of %d batches (%.0f s).", step + 1, steps,
                   time.monotonic() - start)
  return total


def write(path: pathlib.Path, counts: np.ndarray, *, dataset: str,
          block: int) -> None:
  """Writes the counts atomically (a temporary file, then a rename)."""
  record = {"bins": ab_bins.bin_centers().tolist(),
            "counts": [float(c) for c in counts], "dataset": dataset,
            "block": block}
  partial = path.with_suffix(".json.partial")
  partial.write_text(json.dumps(record))
  partial.replace(path)


def read(path: pathlib.Path) -> np.ndarray:
  """The counts of an ab_prior.json, checked against the bins of this code.

  Raises:
    ConfigError: '<path>: ...' not JSON, other bins, or bad counts.
  """
  try:
    if path.stat().st_size > MAX_BYTES:
      raise ValueError(f"over {MAX_BYTES} bytes")
    record = json.loads(path.read_text())
    bins = np.asarray(record["bins"], np.float32)
    counts = np.asarray(record["counts"], np.float64)
  except (OSError, KeyError, TypeError, ValueError) as e:
    raise ConfigError(f"{path}: not an a*b* prior ({e}).") from None
  if bins.shape != ab_bins.bin_centers().shape or not np.array_equal(
      bins, ab_bins.bin_centers()):
    raise ConfigError(f"{path}: its bins are not this version's "
                      f"{ab_bins.num_bins()}; delete it to estimate again.")
  try:
    ab_bins.rebalance_weights(counts)
  except ValueError as e:
    raise ConfigError(f"{path}: {e}") from None
  return counts


def load_or_estimate(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                     block: int) -> np.ndarray:
  """WORKDIR/ab_prior.json's counts; estimated and written first if absent
  (by the primary process; every process estimates the same counts)."""
  path = pathlib.Path(workdir) / FILE_NAME
  if path.exists():
    logging.info("a*b* prior: %s.", path)
    return read(path)
  logging.info("a*b* prior: counting the bins of %d training crops of %s.",
               PRIOR_IMAGES, config.dataset)
  counts = estimate(config, block)
  if jax.process_index() == 0:
    write(path, counts, dataset=config.dataset, block=block)
  return counts
