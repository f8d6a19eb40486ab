"""Evaluation over a finite split: per-image metrics, averaged over real images.

Every output the system names (`System.colorize`) is scored, and so is the
gray baseline (true L, ab = 0), so each number has its floor beside it. The
system's final output is also reported without a prefix (`psnr`, `ssim`, ...).
A system may add per-image metrics of its own (`System.eval_metrics`, e.g.
`top1_accuracy`); one that does not colorize (`System.colorizes = False`, the
backbone classifier) is scored by those alone, without image grids.
Metric definitions: docs/metrics.md.
"""

import collections
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxcolor import backends
from jaxcolor.core import color_space
from jaxcolor.core import parallel
from jaxcolor.evaluation import color_metrics
from jaxcolor.evaluation import image_grid
from jaxcolor.systems.base import System

GRAY = "gray"
TRUTH = "truth"


def _image_metrics(lightness: jax.Array, ab: jax.Array, true_rgb: jax.Array,
                   true_lab: jax.Array, true_colorfulness: jax.Array,
                   auc: tuple[float, float]) -> dict[str, jax.Array]:
  """Per-image metrics [B] of one prediction (network-scaled L and ab)."""
  rgb = color_space.lab_net_to_rgb(lightness, ab)
  lab = jnp.concatenate([color_space.net_to_lightness(lightness),
                         color_space.net_to_ab(ab)], axis=-1)
  return color_metrics.image_metrics(rgb, lab, true_rgb, true_lab,
                                     true_colorfulness,
                                     auc_max_distance=auc[0], auc_step=auc[1])


def auc_settings(system: System) -> tuple[float, float]:
  """(max distance, step) of the raw accuracy AuC from `config.evaluation`."""
  settings = system.config.evaluation
  return float(settings.auc_max_distance), float(settings.auc_step)


def make_eval_step(system: System,
                   auc: tuple[float, float] | None = None) -> Callable:
  """(state, batch) -> ({metric: sum over real images}, count, predictions).

  `predictions` maps each output name to float RGB [B, H, W, 3], for grids.
  `auc`: the raw accuracy AuC's (max distance, step); default from the config.
  """
  auc = auc or auc_settings(system)

  def eval_step(state, batch):
    mask = batch["mask"].astype(jnp.float32)
    # The system's own per-image metrics (`System.eval_metrics`), unprefixed.
    sums = {metric: jnp.sum(values.astype(jnp.float32) * mask)
            for metric, values in system.eval_metrics(state, batch).items()}
    if not system.colorizes:
      return sums, jnp.sum(mask), {}
    lightness, ab = color_space.split_lab(batch["image"])
    true_rgb = batch["image"].astype(jnp.float32) / 255.0
    true_lab = jnp.concatenate([color_space.net_to_lightness(lightness),
                                color_space.net_to_ab(ab)], axis=-1)
    outputs = system.colorize(state, lightness)
    outputs[GRAY] = jnp.zeros_like(ab)
    true_colorfulness = color_metrics.colorfulness(true_rgb)
    sums[TRUTH + "_colorfulness"] = jnp.sum(true_colorfulness * mask)
    for name, pred_ab in outputs.items():
      for metric, values in _image_metrics(lightness, pred_ab, true_rgb,
                                           true_lab, true_colorfulness,
                                           auc).items():
        # Identical images have infinite PSNR: count them as 100 dB.
        values = jnp.where(values == jnp.inf, 100.0, values)
        sums[f"{name}_{metric}"] = jnp.sum(values * mask)
    # An OrderedDict keeps `colorize`'s order through jit, which returns a
    # dict's keys sorted: the first entry must stay the final output (for the
    # Improver system 'improver', which sorts after 'generator').
    predictions = collections.OrderedDict(
        (name, color_space.lab_net_to_rgb(lightness, pred_ab))
        for name, pred_ab in outputs.items())
    return sums, jnp.sum(mask), predictions
  return eval_step


class Evaluator:
  """Runs `eval_step` jitted over the mesh on every batch of a split.

  `fid`: a `jaxcolor.evaluation.fid.FIDAccumulator` to also report
  `<output>_fid` (and `gray_fid`) against the truth; FID pools features
  over the whole split, so it is computed here rather than per image.
  """

  def __init__(self, system: System, mesh: Mesh, state_sharding: Any, *,
               auc: tuple[float, float] | None = None, fid: Any = None):
    self.system = system
    self.mesh = mesh
    self.fid = fid
    self._step = jax.jit(
        make_eval_step(system, auc),
        in_shardings=(state_sharding, parallel.batch_sharded(mesh)),
        out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh),
                       parallel.batch_sharded(mesh)),
        compiler_options=backends.compiler_options(system.config,
                                                   system.platform))

  def lower(self, state: Any, batch: dict[str, Any]) -> jax.stages.Lowered:
    """The evaluation step lowered for these arguments (abstract ones with
    their shardings too: jaxcolor/benchmarking/compile_only.py)."""
    return self._step.lower(state, batch)

  def evaluate(self, state: Any, batches: Iterable[dict[str, np.ndarray]],
               num_grid_images: int = 0) -> tuple[dict[str, float], dict]:
    """Means over the real images of every batch, and the first images.

    Returns:
      (metrics, grid) where metrics has `<output>_<metric>` for every output
      and the gray baseline, the final output's metrics unprefixed, and
      `num_images`; grid holds uint8 arrays 'gray', 'prediction', 'truth' of
      the first `num_grid_images` images (process 0's share).
    """
    totals, count = None, 0.0
    grid = {"gray": [], "prediction": [], "truth": []}
    final = None
    if self.fid is not None:
      self.fid.reset()
    for batch in batches:
      global_batch = parallel.global_batch(batch, self.mesh)
      sums, n, predictions = self._step(state, global_batch)
      if self.fid is not None and predictions:
        self.fid.update({**predictions,
                         TRUTH: global_batch["image"].astype(jnp.float32) / 255},
                        global_batch["mask"])
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
      count += float(n)
      final = final or next(iter(predictions), None)
      have = sum(len(x) for x in grid["truth"])
      if have < num_grid_images and final is not None:
        take = min(num_grid_images - have, int(batch["mask"].sum()))
        local = {k: _local_rows(v)[:take] for k, v in predictions.items()}
        grid["prediction"].append(local[final])
        grid["gray"].append(local[GRAY])
        grid["truth"].append(batch["image"][:take])
    if totals is None or count == 0:
      raise ValueError("The evaluation split yielded no image.")
    means = {k: float(v) / count for k, v in jax.device_get(totals).items()}
    if self.fid is not None and self.fid.moments:
      means.update(self.fid.result())
    for key in list(means):
      if final is not None and key.startswith(final + "_"):
        means[key[len(final) + 1:]] = means[key]
    means["num_images"] = int(count)
    if final is not None:  # Whose metrics the unprefixed keys repeat.
      means["final_output"] = final
    images = {k: image_grid.to_uint8(np.concatenate(v)) if k != "truth"
              else np.concatenate(v) for k, v in grid.items() if v}
    return means, images


def _local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded array, in order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  rows, seen = [], set()
  for shard in shards:
    start = shard.index[0].start or 0
    if start not in seen:
      seen.add(start)
      rows.append(np.asarray(shard.data))
  return np.concatenate(rows)
