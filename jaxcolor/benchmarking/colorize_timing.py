"""Timing inference: the colorize network alone, and the colorize path on a
folder of photos stage by stage and end to end (`python -m
jaxcolor.benchmark --colorize=FOLDER` or `--inference`).

The network alone runs at `config.image_size` and the given batch (images/s);
the path decodes, resizes to the network's input, runs the network,
upsamples a*b*, recombines them with the full-resolution L* and encodes PNG
(host seconds per image), then runs end to end as `python -m
jaxcolor.colorize` does (pipelined over threads: images/s). The networks
have fresh weights: speed does not depend on their values.
"""

import pathlib
import statistics
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcolor.benchmarking.flops import compiled_cost, model_flops, with_xla_convolutions
from jaxcolor.inference import photo_paths
from jaxcolor.inference import rendering
from jaxcolor.inference.colorizer import Colorizer
from jaxcolor.training import experiment


def fresh_colorizer(config: ml_collections.ConfigDict, batch_size: int
               ) -> Colorizer:
  """A colorizer of the config's system with fresh weights, one device."""
  built = experiment.build(config, data="none", devices=jax.local_devices()[:1])
  state = jax.device_get(built.init_state())
  return Colorizer(built.system, state, image_size=config.image_size,
                            batch_size=batch_size)


def time_network(colorizer: Colorizer, *, steps: int
                 ) -> dict[str, Any]:
  """The colorize network alone on a uint8 batch at its input size: L* in,
  a*b* back on the host (median of `steps` calls after the compiling one)."""
  batch_size, size = colorizer.batch_size, colorizer.image_size
  batch = np.random.default_rng(0).integers(
      0, 256, (batch_size, size, size, 3), np.uint8)
  start = time.perf_counter()
  colorizer.network_ab(batch)
  compile_s = time.perf_counter() - start
  times, cpu = [], time.process_time()
  for _ in range(steps):
    start = time.perf_counter()
    colorizer.network_ab(batch)
    times.append(time.perf_counter() - start)
  cpu = (time.process_time() - cpu) / max(steps, 1)
  flops = compiled_cost(colorizer.lowered(batch).compile()).get("flops")
  network_s = statistics.median(times) if times else float("nan")
  model = fresh_colorizer(with_xla_convolutions(colorizer.system.config),
                     batch_size)
  return {"colorize_batch": batch_size, "network_compile_s": compile_s,
          "network_model_flops_per_batch": model_flops(model.lowered(batch)),
          "network_batch_s": network_s,
          "network_batch_min_s": min(times, default=float("nan")),
          "network_cpu_time_s": cpu,
          "network_flops_per_batch": flops,
          "network_images_per_s": batch_size / network_s}


def time_colorize(config: ml_collections.ConfigDict, folder: str, *,
                  batch_size: int, steps: int) -> dict[str, Any]:
  """Inference throughput: the network alone, then the colorize path on
  `folder` stage by stage and end to end (module docstring)."""
  colorizer = fresh_colorizer(config, batch_size)
  network = time_network(colorizer, steps=steps)
  network_s, batch_size = network["network_batch_s"], colorizer.batch_size
  size = colorizer.image_size
  files = [file for file, _ in photo_paths.find_inputs([folder])]
  if not files:
    raise ValueError(f"--colorize={folder}: no image files there.")
  stages = dict.fromkeys(("decode", "resize", "network", "upsample",
                          "recombine", "encode"), 0.0)
  with tempfile.TemporaryDirectory() as out:
    # Warm-up: the network's and the color conversions' compilations.
    photo_paths.colorize_files(colorizer, files[:batch_size], out,
                               progress=False)
    for first in range(0, len(files), batch_size):
      images = []
      for file in files[first:first + batch_size]:
        start = time.perf_counter()
        try:
          images.append(photo_paths.load_image(file))
        except (OSError, ValueError):
          pass  # Not counted; colorize_files names it below.
        stages["decode"] += time.perf_counter() - start
      start = time.perf_counter()
      inputs = np.zeros((batch_size, size, size, 3), np.uint8)
      for i, image in enumerate(images):
        inputs[i] = rendering.squeezed(image, size)
      stages["resize"] += time.perf_counter() - start
      start = time.perf_counter()
      abs_ = colorizer.network_ab(inputs)
      stages["network"] += time.perf_counter() - start
      for i, image in enumerate(images):
        start = time.perf_counter()
        ab = rendering.upsample_ab(abs_[i], *image.size)
        stages["upsample"] += time.perf_counter() - start
        start = time.perf_counter()
        rgb = rendering.join_lightness(image, ab)
        stages["recombine"] += time.perf_counter() - start
        start = time.perf_counter()
        photo_paths.save_image(rgb, pathlib.Path(out) / f"{i}.png", "png", 95)
        stages["encode"] += time.perf_counter() - start
    start = time.perf_counter()
    summary = photo_paths.colorize_files(colorizer, files, out, progress=False)
    end_to_end_s = time.perf_counter() - start
  count = len(summary["written"])
  serial_s = sum(stages.values())
  return {
      **network,
      "colorize_folder": folder,
      "colorize_images": count,
      "stage_s_per_image": {k: v / count for k, v in stages.items()},
      "serial_images_per_s": count / serial_s,
      "end_to_end_s": end_to_end_s,
      "end_to_end_images_per_s": count / end_to_end_s,
      # Target: the path within 2 x the network's own time per image.
      "end_to_end_over_network": (end_to_end_s / count) / (network_s / batch_size),
      "colorize_threads": photo_paths.default_threads(),
  }
