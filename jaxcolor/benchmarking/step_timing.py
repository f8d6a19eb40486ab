r"""Timing the real training step, and optionally the host input pipeline.

  python -m jaxcolor.benchmark --config configs/pix2pix.py \
      --config.image_size=128 --config.generator.num_downsamplings=7
  python -m jaxcolor.benchmark --config configs/pix2pix.py \
      --config.compute_dtype=bfloat16 --input_pipeline
  python -m jaxcolor.benchmark --config configs/cpu_budget.py --colorize=PHOTOS

(or `jaxcolor benchmark ...`; jaxcolor/runtime/job.py starts both and holds the
`--help` text).

The step is the one training runs (`train_step.jit_train_step`: the system's
`train_step`, jitted over the device mesh with the state donated), fed a
synthetic batch already on the devices, so the number is the step's own cost:
no decoding, no host-to-device copy. It is timed after compilation and
`--warmup` untimed steps; the reported `step_time_s` is the median over
`--steps` steps, each waited for. `unsynced_step_time_s` is the mean over the
same number of steps dispatched back to back (one wait at the end), which is
how the training loop runs them.

FLOPs come from XLA's cost analysis: `flops_per_step` of the compiled step
(per device, times the device count: what the devices execute), and
`model_flops_per_step` of the same step with XLA's own convolutions
(`conv_impl='xla'`), lowered: the multiply-adds of the model's direct
convolutions, the usual count behind a rate and MFU. The two differ on the
CPU, whose forms (jaxcolor/backends/xla_cpu) compute the same function with
fewer products (Winograd's); `tflops_per_s` and `mfu` (the achieved rate
over the devices' peak dense rate for the compute dtype, when the device is
in `PEAK_FLOPS`) are on the model's count.

`--colorize=FOLDER` times inference instead: the network alone at
`config.image_size` and `--colorize_batch` (images/s), then the colorize
path on every photo of FOLDER, stage by stage (decode, resize to the
network's input, network, a*b* upsampling, recombination with the full
resolution L*, PNG encoding: host seconds per image) and end to end as
`python -m jaxcolor.colorize` runs it (pipelined over threads: images/s).
The networks have fresh weights: speed does not depend on their values.
`--inference` times the network alone, without a folder (what
benchmarks/cpu_step_vs_torch.py --inference sets against PyTorch's).

`--input_pipeline` also times the host pipeline training reads
(decode + resize + random crop + flip + batching, `jaxcolor.data`) on
`config.dataset` and reports images per CPU-second (all threads counted), so
it can be set against the images per second one host's step consumes.

The LAST line printed is one JSON object with every number; everything else
goes to the log. Multi-host: set JAXCOLOR_DISTRIBUTED=1 as for training
(jaxcolor.runtime.distributed); every process must run the benchmark.
"""

import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxcolor import backends
from jaxcolor import data
from jaxcolor.benchmarking import colorize_timing
from jaxcolor.benchmarking import flops as flops_lib
from jaxcolor.core import parallel
from jaxcolor.runtime import distributed
from jaxcolor.training import experiment
from jaxcolor.training import train_step


def synthetic_batch(config: ml_collections.ConfigDict, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """This process's share of a global batch: smooth random color fields.

  Photos-like enough (not white noise) that nothing in the step is degenerate;
  the step's cost does not depend on the pixel values.
  """
  local_batch = config.batch_size // jax.process_count()
  size = config.image_size
  rng = np.random.default_rng(seed + jax.process_index())
  block = max(size // 8, 1)
  low = rng.integers(0, 256, (local_batch, -(-size // block), -(-size // block), 3))
  image = np.kron(low, np.ones((1, block, block, 1)))[:, :size, :size]
  batch = {"image": image.astype(np.uint8)}
  if "classifier" in config:  # The classify system trains on labels.
    batch["label"] = rng.integers(0, config.classifier.num_classes,
                                  local_batch).astype(np.int32)
  return batch


def _memory() -> dict[str, Any]:
  """Peak device memory where the backend reports it, and the host's RSS."""
  out: dict[str, Any] = {
      "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
  stats = jax.local_devices()[0].memory_stats()
  if stats:
    for key in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit"):
      if key in stats:
        out[f"device_{key}"] = int(stats[key])
  return out


def time_train_step(config: ml_collections.ConfigDict, *, steps: int,
                    warmup: int) -> dict[str, Any]:
  """Compiles and times the training step of `config` on all devices."""
  # Synthetic batches: no dataset is opened.
  built = experiment.build(config, data="none")
  system, mesh = built.system, built.mesh
  # The step the run ends with: for staged systems, the full (last) stage.
  phase = system.phase(config.num_train_steps - 1)
  step, _ = train_step.jit_train_step(system, mesh, built.abstract_state,
                                      phase)

  start = time.perf_counter()
  state = jax.block_until_ready(experiment.initial_state(
      system, built.state_sharding, built.init_rng))
  init_s = time.perf_counter() - start
  step_rng = built.step_rng
  batches = [parallel.global_batch(synthetic_batch(config, seed), mesh)
             for seed in range(2)]

  start = time.perf_counter()
  compiled = step.lower(state, batches[0], step_rng).compile()
  compile_s = time.perf_counter() - start
  cost = flops_lib.compiled_cost(compiled)
  device = jax.devices()[0]
  flops = cost.get("flops")
  # The compiled program is one device's part of the SPMD computation.
  flops_per_step = flops * jax.device_count() if flops else None
  xla_built = experiment.build(flops_lib.with_xla_convolutions(config), data="none")
  xla_step, _ = train_step.jit_train_step(
      xla_built.system, xla_built.mesh, xla_built.abstract_state, phase)
  model_flops = flops_lib.model_flops(xla_step.lower(xla_built.abstract_state,
                                            batches[0], step_rng))
  if steps == 0:  # --steps=0: compile only (compile_s, FLOPs, memory).
    return {"phase": phase, "compile_s": compile_s, "init_s": init_s,
            "flops_per_step": flops_per_step,
            "model_flops_per_step": model_flops, "timed_steps": 0,
            **_memory()}

  for i in range(warmup):
    state, metrics = compiled(state, batches[i % 2], step_rng)
  jax.block_until_ready((state, metrics) if warmup else state)

  times, cpu = [], time.process_time()
  for i in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batches[i % 2], step_rng)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
  cpu = (time.process_time() - cpu) / steps
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = compiled(state, batches[i % 2], step_rng)
  jax.block_until_ready((state, metrics))
  unsynced = (time.perf_counter() - start) / steps
  finite = all(np.isfinite(v) for v in jax.device_get(metrics).values())

  step_time = statistics.median(times)
  achieved = model_flops / step_time if model_flops else None
  peak = flops_lib.peak_flops(device.device_kind, config.compute_dtype)
  return {
      "phase": phase,
      "step_time_s": step_time,
      "step_time_min_s": min(times),
      "step_time_max_s": max(times),
      "unsynced_step_time_s": unsynced,
      "step_cpu_time_s": cpu,
      "images_per_s": config.batch_size / step_time,
      "compile_s": compile_s,
      "init_s": init_s,
      "flops_per_step": flops_per_step,
      "model_flops_per_step": model_flops,
      "tflops_per_s": achieved / 1e12 if achieved else None,
      "peak_tflops_per_s_per_device": peak / 1e12 if peak else None,
      "mfu": achieved / (peak * jax.device_count()) if achieved and peak else None,
      "bytes_accessed_per_step": (cost["bytes accessed"] * jax.device_count()
                                  if "bytes accessed" in cost else None),
      "losses_finite": bool(finite),
      "timed_steps": steps,
      **_memory(),
  }


def time_input_pipeline(config: ml_collections.ConfigDict, *,
                        num_batches: int) -> dict[str, Any]:
  """Host pipeline throughput on `config.dataset`: wall and per CPU-second.

  CPU time is the whole process's (every decoding thread), measured with
  worker_count=0 so no work hides in child processes; one warm-up batch
  first (thread start-up, file cache).
  """
  iterator = data.create_train_iterator(
      config.dataset, image_size=config.image_size,
      global_batch_size=config.batch_size, seed=config.seed,
      data_dir=config.data_dir or None, worker_count=0)
  local_batch = next(iterator)["image"].shape[0]
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    next(iterator)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  images = num_batches * local_batch
  return {"input_images": images,
          "input_images_per_s": images / wall,
          "input_images_per_cpu_s": images / cpu,
          "input_dataset": config.dataset}


def run(config: ml_collections.ConfigDict, *, steps: int, warmup: int,
        input_pipeline: bool, input_batches: int, skip_step: bool = False,
        colorize_folder: str | None = None, colorize_batch: int = 16,
        inference: bool = False) -> dict[str, Any]:
  """Every measurement, with the facts needed to read it."""
  device = jax.devices()[0]
  result: dict[str, Any] = {
      "system": config.system,
      "image_size": config.image_size,
      "global_batch_size": config.batch_size,
      "compute_dtype": config.compute_dtype,
      "conv_impl": backends.resolve(config.conv_impl, device.platform),
      # The XLA options the programs compiled with (None: XLA's defaults).
      "compiler_options": backends.compiler_options(config, device.platform),
      "device_kind": device.device_kind,
      "platform": device.platform,
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "host_cpu_count": os.cpu_count(),
      "jax_version": jax.__version__,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
      "python": platform.python_version(),
  }
  if hasattr(os, "getloadavg"):
    result["load_average_before"] = round(os.getloadavg()[0], 2)
  if colorize_folder is not None:
    result.update(colorize_timing.time_colorize(config, colorize_folder,
                                batch_size=colorize_batch, steps=steps))
  elif inference:
    result.update(colorize_timing.time_network(colorize_timing.fresh_colorizer(config, colorize_batch),
                               steps=steps))
  elif not skip_step:
    result.update(time_train_step(config, steps=steps, warmup=warmup))
  if input_pipeline:
    try:
      result.update(time_input_pipeline(config, num_batches=input_batches))
    except (OSError, ValueError) as e:  # E.g. the TFDS data is not here.
      result["input_pipeline_error"] = str(e)
    if not skip_step and "input_images_per_cpu_s" in result:
      # What one host's share of the step consumes, in host cores.
      per_host = result["images_per_s"] / jax.process_count()
      result["input_cores_needed"] = per_host / result["input_images_per_cpu_s"]
  if hasattr(os, "getloadavg"):
    result["load_average_after"] = round(os.getloadavg()[0], 2)
  return result


def job(config: ml_collections.ConfigDict, **options) -> dict[str, Any]:
  """The benchmark job (`jaxcolor benchmark`): multi-host start-up as for
  training, `run(config, **options)`, every number to the log and as one
  JSON object on the last line of stdout."""
  distributed.initialize()
  result = run(config, **options)
  for key, value in result.items():
    logging.info("%s: %s", key, value)
  print(json.dumps(result), flush=True)
  sys.stdout.flush()
  return result
