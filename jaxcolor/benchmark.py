r"""Times the real training step, and optionally the host input pipeline.

  python -m jaxcolor.benchmark --config configs/pix2pix.py \
      --config.image_size=128 --config.generator.num_downsamplings=7
  python -m jaxcolor.benchmark --config configs/pix2pix.py \
      --config.compute_dtype=bfloat16 --input_pipeline
  python -m jaxcolor.benchmark --config configs/cpu_budget.py --colorize=PHOTOS

(or `jaxcolor benchmark ...`; jaxcolor/cli.py starts both and holds the
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
(jaxcolor.distributed); every process must run the benchmark.
"""

import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxcolor import backends  # noqa: E402
from jaxcolor import cli  # noqa: E402
from jaxcolor import colorize  # noqa: E402
from jaxcolor import compile_only  # noqa: E402
from jaxcolor import distributed  # noqa: E402
from jaxcolor import data  # noqa: E402
from jaxcolor import experiment  # noqa: E402
from jaxcolor import parallel  # noqa: E402
from jaxcolor import photo_files  # noqa: E402
from jaxcolor import photo_io  # noqa: E402
from jaxcolor import train_step  # noqa: E402
from jaxcolor.errors import ConfigError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with a preset: configs/pix2pix.py.",
    lock_config=True)
_STEPS = flags.DEFINE_integer(
    "steps", 20, "Timed steps (the median is reported); 0: compile only.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.")
_INPUT_PIPELINE = flags.DEFINE_bool(
    "input_pipeline", False, "Also time the host input pipeline on config.dataset.")
_INPUT_BATCHES = flags.DEFINE_integer(
    "input_batches", 20, "Batches read when timing the input pipeline.")
_COLORIZE = flags.DEFINE_string(
    "colorize", None, "A folder of photos: time inference (the network, and "
    "the colorize path stage by stage and end to end) instead of training.")
_COLORIZE_BATCH = flags.DEFINE_integer(
    "colorize_batch", 16, "Batch of the network in --colorize.")
_INFERENCE = flags.DEFINE_bool(
    "inference", False, "Time the colorize network alone (no folder needed) "
    "instead of training.")
_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "Compile only, for a TPU slice that need not be here "
    "(e.g. v5e:4x4, v5p:4x4x4; needs libtpu: the tpu extra): one JSON line "
    "per program with its memory, cost, collectives and roofline bound "
    "(jaxcolor/compile_only.py).")
_PER_CHIP_BATCH = flags.DEFINE_integer(
    "per_chip_batch", None, "With --topology: images per chip in a training "
    "step (default: the config's per_device_batch_size, else batch_size over "
    "the chips).")
_PROGRAMS = flags.DEFINE_list(
    "programs", list(compile_only.PROGRAMS), "With --topology: which programs "
    f"to compile, of {', '.join(compile_only.PROGRAMS)}.")
_LAST_PHASE_ONLY = flags.DEFINE_bool(
    "last_phase_only", False, "With --topology: compile only the last "
    "training phase (a staged system's full step), not every phase.")
_DUMP_HLO = flags.DEFINE_string(
    "dump_hlo", None, "With --topology: write each compiled program's "
    "optimized HLO text to this folder.")
_MAX_BATCH_COMPILES = flags.DEFINE_integer(
    "max_batch_compiles", None, "With --max_batch: stop after this many "
    "compiles, with the largest batch that fit and the smallest that did not "
    "(default: until they are adjacent).")
_MAX_BATCH = flags.DEFINE_bool(
    "max_batch", False, "With --topology: also find the largest per-chip "
    "batch whose training step fits the chip's memory.")
_SKIP_STEP = flags.DEFINE_bool(
    "skip_step", False, "Time only the input pipeline (with --input_pipeline).")

# Peak dense FLOP/s per device by compute dtype, from the vendors' data
# sheets. float32 on NVIDIA GPUs: XLA runs float32 convolutions and matmuls on
# TF32 tensor cores by default, so that is the peak they can reach. TPUs
# multiply float32 in bfloat16 passes at the default precision.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bfloat16": 756e12, "float32": 378e12},
    "H100": {"bfloat16": 989e12, "float32": 494e12},   # SXM5
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12},
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """Peak dense FLOP/s of one device of `device_kind`, or None if unknown.

  The most specific (longest) matching name wins: 'H100 PCIe' before 'H100'.
  """
  for name in sorted(PEAK_FLOPS, key=len, reverse=True):
    if name.lower() in device_kind.lower():
      return PEAK_FLOPS[name].get(dtype)
  return None


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


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else {}
  return cost or {}


def _with_xla_convolutions(config: ml_collections.ConfigDict
                           ) -> ml_collections.ConfigDict:
  """`config` with XLA's own convolutions (`conv_impl='xla'`): the direct
  convolutions whose multiply-adds are the model's FLOPs. The networks'
  parameters are the same in either form."""
  config = config.copy_and_resolve_references()
  config.conv_impl = "xla"
  return config


def _model_flops(lowered: jax.stages.Lowered) -> float | None:
  """XLA's FLOP count of a lowered (not yet partitioned) program: the whole
  computation, all devices together; None where the backend has none."""
  try:
    return _cost(lowered).get("flops")
  except Exception as e:  # noqa: BLE001 - a count is optional, the timing is not.
    logging.warning("No cost analysis of the lowered program: %s", e)
    return None


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
  state = jax.block_until_ready(experiment.init_state(
      system, built.state_sharding, built.init_rng))
  init_s = time.perf_counter() - start
  step_rng = built.step_rng
  batches = [parallel.global_batch(synthetic_batch(config, seed), mesh)
             for seed in range(2)]

  start = time.perf_counter()
  compiled = step.lower(state, batches[0], step_rng).compile()
  compile_s = time.perf_counter() - start
  cost = _cost(compiled)
  device = jax.devices()[0]
  flops = cost.get("flops")
  # The compiled program is one device's part of the SPMD computation.
  flops_per_step = flops * jax.device_count() if flops else None
  xla_built = experiment.build(_with_xla_convolutions(config), data="none")
  xla_step, _ = train_step.jit_train_step(
      xla_built.system, xla_built.mesh, xla_built.abstract_state, phase)
  model_flops = _model_flops(xla_step.lower(xla_built.abstract_state,
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
  peak = peak_flops(device.device_kind, config.compute_dtype)
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


def _colorizer(config: ml_collections.ConfigDict, batch_size: int
               ) -> colorize.Colorizer:
  """A colorizer of the config's system with fresh weights, one device."""
  built = experiment.build(config, data="none", devices=jax.local_devices()[:1])
  state = jax.device_get(built.init_state())
  return colorize.Colorizer(built.system, state, image_size=config.image_size,
                            batch_size=batch_size)


def time_network(colorizer: colorize.Colorizer, *, steps: int
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
  flops = _cost(colorizer.lowered(batch).compile()).get("flops")
  network_s = statistics.median(times) if times else float("nan")
  model = _colorizer(_with_xla_convolutions(colorizer.system.config),
                     batch_size)
  return {"colorize_batch": batch_size, "network_compile_s": compile_s,
          "network_model_flops_per_batch": _model_flops(model.lowered(batch)),
          "network_batch_s": network_s,
          "network_batch_min_s": min(times, default=float("nan")),
          "network_cpu_time_s": cpu,
          "network_flops_per_batch": flops,
          "network_images_per_s": batch_size / network_s}


def time_colorize(config: ml_collections.ConfigDict, folder: str, *,
                  batch_size: int, steps: int) -> dict[str, Any]:
  """Inference throughput: the network alone, then the colorize path on
  `folder` stage by stage and end to end (module docstring)."""
  colorizer = _colorizer(config, batch_size)
  network = time_network(colorizer, steps=steps)
  network_s, batch_size = network["network_batch_s"], colorizer.batch_size
  size = colorizer.image_size
  files = [file for file, _ in photo_files.find_inputs([folder])]
  if not files:
    raise ValueError(f"--colorize={folder}: no image files there.")
  stages = dict.fromkeys(("decode", "resize", "network", "upsample",
                          "recombine", "encode"), 0.0)
  with tempfile.TemporaryDirectory() as out:
    # Warm-up: the network's and the color conversions' compilations.
    photo_files.colorize_files(colorizer, files[:batch_size], out,
                               progress=False)
    for first in range(0, len(files), batch_size):
      images = []
      for file in files[first:first + batch_size]:
        start = time.perf_counter()
        try:
          images.append(photo_files.load_image(file))
        except (OSError, ValueError):
          pass  # Not counted; colorize_files names it below.
        stages["decode"] += time.perf_counter() - start
      start = time.perf_counter()
      inputs = np.zeros((batch_size, size, size, 3), np.uint8)
      for i, image in enumerate(images):
        inputs[i] = photo_io.squeezed(image, size)
      stages["resize"] += time.perf_counter() - start
      start = time.perf_counter()
      abs_ = colorizer.network_ab(inputs)
      stages["network"] += time.perf_counter() - start
      for i, image in enumerate(images):
        start = time.perf_counter()
        ab = photo_io.upsample_ab(abs_[i], *image.size)
        stages["upsample"] += time.perf_counter() - start
        start = time.perf_counter()
        rgb = photo_io.join_lightness(image, ab)
        stages["recombine"] += time.perf_counter() - start
        start = time.perf_counter()
        photo_files.save_image(rgb, pathlib.Path(out) / f"{i}.png", "png", 95)
        stages["encode"] += time.perf_counter() - start
    start = time.perf_counter()
    summary = photo_files.colorize_files(colorizer, files, out, progress=False)
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
      "colorize_threads": photo_files.default_threads(),
  }


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
    result.update(time_colorize(config, colorize_folder,
                                batch_size=colorize_batch, steps=steps))
  elif inference:
    result.update(time_network(_colorizer(config, colorize_batch),
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"{cli.program()} takes only flags, not "
                         f"{' '.join(argv[1:])}.")
  if _INFERENCE.value and _COLORIZE.value is not None:
    raise app.UsageError("--inference times the network alone and --colorize "
                         "the network and the path: give one.")
  if _TOPOLOGY.value:
    _compile_only(_CONFIG.value)
    return
  distributed.initialize()
  config = _CONFIG.value
  try:
    result = run(config, steps=_STEPS.value, warmup=_WARMUP.value,
                 input_pipeline=_INPUT_PIPELINE.value,
                 input_batches=_INPUT_BATCHES.value,
                 skip_step=_SKIP_STEP.value, colorize_folder=_COLORIZE.value,
                 colorize_batch=_COLORIZE_BATCH.value,
                 inference=_INFERENCE.value)
  except ConfigError as e:  # One line, as from `python -m jaxcolor.main`.
    print(f"Configuration error: {e}", file=sys.stderr)
    sys.exit(2)
  for key, value in result.items():
    logging.info("%s: %s", key, value)
  print(json.dumps(result), flush=True)
  sys.stdout.flush()


def _compile_only(config: ml_collections.ConfigDict) -> None:
  """--topology: one JSON line per compiled program (and per batch search),
  nothing run."""
  unknown = set(_PROGRAMS.value) - set(compile_only.PROGRAMS)
  if unknown:
    raise app.UsageError(f"--programs: unknown {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(compile_only.PROGRAMS)}.")
  try:
    devices = compile_only.topology_devices(_TOPOLOGY.value)
    plan = compile_only.plan(config, _TOPOLOGY.value, _PER_CHIP_BATCH.value,
                             devices)
    last = compile_only.phases(plan.built.system,
                               plan.built.config.num_train_steps)[-1]
    known = {}
    for record in compile_only.compile_programs(
        plan, tuple(_PROGRAMS.value), last_phase_only=_LAST_PHASE_ONLY.value,
        hlo_dir=_DUMP_HLO.value):
      print(json.dumps(record), flush=True)
      if record["program"] == f"train:{last}":
        known[plan.per_chip_batch] = record
    if _MAX_BATCH.value:
      found = compile_only.largest_batch(
          config, _TOPOLOGY.value, start=plan.per_chip_batch, devices=devices,
          max_compiles=_MAX_BATCH_COMPILES.value, known=known)
      found.pop("report")  # The sizes it tried are in "tried".
      print(json.dumps({"program": "max_batch", "system": config.system,
                        "topology": _TOPOLOGY.value,
                        "compute_dtype": config.compute_dtype, **found}),
            flush=True)
  except ConfigError as e:
    print(f"Configuration error: {e}", file=sys.stderr)
    sys.exit(2)


def _define_flags() -> None:
  # The flags themselves are defined at import, beside the timing functions
  # the tests import; only the requirement waits for a run.
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  cli.run("benchmark", sys.modules[__name__])
