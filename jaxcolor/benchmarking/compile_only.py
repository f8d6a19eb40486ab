"""A config's programs compiled for a TPU slice that is not here.

  python -m jaxcolor.benchmark --config configs/pix2pix.py \\
      --topology v5e:4x4 --per_chip_batch 16 --config.compute_dtype=bfloat16

With the `libtpu` package installed (the `tpu` and `test` extras),
`jax.experimental.topologies.get_topology_desc` describes a TPU slice on any
host, and `jax.jit(f).lower(...).compile()` over a mesh of its devices runs
XLA's real TPU compiler. Nothing runs. The experiment is built on those
devices exactly as training builds it (`experiment.build`, so `conv_impl`
'auto' resolves for the TPU), and each program is compiled from abstract
arguments carrying their shardings: the training step of every phase
(`train_step.jit_train_step`), the evaluation step (`Evaluator`) and the
colorize program (`colorizer_lib.Colorizer`). Each gives one report (`report`):

- memory per device from `memory_analysis()` (arguments, outputs, aliased
  donations, temporaries) against the device's share of the chip's HBM;
- FLOPs and bytes per device per step from `cost_analysis()`, and XLA's
  own estimate of the step time where it gives one (`xla_optimal_s`);
- the collectives of the optimized HLO, with the bytes of their results;
- a roofline bound on the step time from the chip's published figures
  (jaxcolor/benchmarking/chips.py): the largest of compute (FLOPs / peak), HBM traffic
  (bytes / bandwidth) and collectives (a ring's 2 (n-1)/n of the all-reduced
  bytes over the ICI bandwidth), as if they overlapped perfectly. It is a
  lower bound on the step time, and the MFU it implies an upper bound.

`largest_batch` searches the largest per-chip batch whose training step fits
(a secant on the compiled memory, each guess verified by compiling).
A deviceless v4 topology has one device per TensorCore (two per chip): its
figures are per device, each with half the chip.
"""

import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxcolor.benchmarking import chips
from jaxcolor.benchmarking import roofline
from jaxcolor.core import parallel
from jaxcolor.core.errors import ConfigError
from jaxcolor.evaluation import evaluator
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.runtime import platforms
from jaxcolor.training import experiment
from jaxcolor.training import train_step

PROGRAMS = ("train", "eval", "colorize")

@contextlib.contextmanager
def _native_stderr_to_log() -> Iterator[None]:
  """Sends what native code writes to file descriptor 2 (libtpu's start-up
  lines about TPU worker hostnames, meaningless off a TPU VM) to the log at
  debug level instead of the console."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode(errors="replace").splitlines():
        logging.debug("libtpu: %s", line)


def topology_devices(topology: str) -> list[jax.Device]:
  """The devices of a TPU slice such as 'v5e:4x4', without a TPU.

  Raises:
    ConfigError: libtpu is missing, or the name is not a topology it knows.
  """
  chips.for_topology(topology)  # A chip without figures fails first.
  platforms.allow_shared_libtpu()
  from jax.experimental import topologies  # noqa: PLC0415 - only here.
  try:
    with _native_stderr_to_log():
      return list(topologies.get_topology_desc(
          topology_name=topology, platform="tpu").devices)
  except Exception as e:  # noqa: BLE001 - libtpu's errors have no type.
    hint = ("" if _libtpu_installed() else
            " libtpu is not installed: pip install 'jaxcolor[tpu]'.")
    raise ConfigError(f"--topology={topology!r}: no TPU topology "
                      f"({str(e).splitlines()[0]}).{hint}") from None


def _libtpu_installed() -> bool:
  import importlib.util  # noqa: PLC0415
  return importlib.util.find_spec("libtpu") is not None


def _abstract(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                        sharding=s),
                      tree, shardings)


def _batch(config: ml_collections.ConfigDict, size: int, mesh,
           eval_mask: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
  """The abstract batch a step of `config` reads, `size` images, sharded."""
  sharding = parallel.batch_sharded(mesh)
  image = (size, config.image_size, config.image_size, 3)
  batch = {"image": jax.ShapeDtypeStruct(image, np.uint8, sharding=sharding)}
  if "classifier" in config:
    batch["label"] = jax.ShapeDtypeStruct((size,), np.int32, sharding=sharding)
  if eval_mask:
    batch["mask"] = jax.ShapeDtypeStruct((size,), np.bool_, sharding=sharding)
  return batch


def phases(system: Any, num_steps: int) -> list[str]:
  """The system's training phases in the order a run meets them."""
  seen: dict[str, None] = {}
  for step in range(num_steps):
    seen.setdefault(system.phase(step), None)
  return list(seen)


@dataclasses.dataclass
class Plan:
  """A config built on a topology's devices at one per-chip batch."""
  topology: str
  chip: chips.Chip
  devices: list[jax.Device]
  built: experiment.Experiment
  per_chip_batch: int

  @property
  def global_batch(self) -> int:
    return self.built.config.batch_size


def plan(config: ml_collections.ConfigDict, topology: str,
         per_chip_batch: int | None = None,
         devices: list[jax.Device] | None = None) -> Plan:
  """Builds `config` on `topology`'s devices (nothing compiles).

  `per_chip_batch`: images per chip (per device) in a training step; None
  keeps the config's (`per_device_batch_size`, else `batch_size` over the
  device count).
  """
  devices = devices or topology_devices(topology)
  config = config.copy_and_resolve_references()
  if per_chip_batch is not None:
    config.per_device_batch_size = per_chip_batch
  built = experiment.build(config, data="none", devices=devices)
  return Plan(topology, chips.for_topology(topology), devices, built,
              built.config.batch_size // len(devices))


def lowered_programs(p: Plan, programs: tuple[str, ...] = PROGRAMS, *,
                     last_phase_only: bool = False
                     ) -> Iterator[tuple[str, int, Any]]:
  """(name, global batch, lowered program) for each requested program;
  'train' gives one per phase ('train:<phase>'), or the last phase's alone
  (the full step of a staged system) with `last_phase_only`."""
  built, mesh = p.built, p.built.mesh
  state = _abstract(built.abstract_state, built.state_sharding)
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype,
                             sharding=parallel.replicated(mesh))
  if "train" in programs:
    train_phases = phases(built.system, built.config.num_train_steps)
    for phase in train_phases[-1:] if last_phase_only else train_phases:
      step, _ = train_step.jit_train_step(built.system, mesh,
                                          built.abstract_state, phase)
      yield (f"train:{phase}", p.global_batch,
             step.lower(state, _batch(built.config, p.global_batch, mesh),
                        rng))
  if "eval" in programs:
    size = built.config.eval_batch_size
    yield ("eval", size, evaluator.Evaluator(
        built.system, mesh, built.state_sharding).lower(
            state, _batch(built.config, size, mesh, eval_mask=True)))
  if "colorize" in programs and getattr(built.system, "colorizes", True):
    colorizer = colorizer_lib.Colorizer.for_compiling(
        built.system, built.abstract_state,
        image_size=built.config.image_size, batch_size=p.global_batch,
        devices=p.devices)
    yield ("colorize", colorizer.batch_size, colorizer.lowered_abstract())


def compile_programs(p: Plan, programs: tuple[str, ...] = PROGRAMS, *,
                     last_phase_only: bool = False,
                     hlo_dir: str | None = None) -> Iterator[dict[str, Any]]:
  """One report per program of plan `p` (`lowered_programs`), compiled for
  its topology; with `hlo_dir`, each optimized program's HLO text is
  written there too (`<system>_<program>.hlo.txt`), to read what XLA made
  of it (benchmarks/pod_bytes.py attributes its bytes)."""
  config = p.built.config
  for name, batch, lowered in lowered_programs(
      p, programs, last_phase_only=last_phase_only):
    start = time.perf_counter()
    with _native_stderr_to_log():
      compiled = lowered.compile()
    if hlo_dir:
      os.makedirs(hlo_dir, exist_ok=True)
      path = os.path.join(hlo_dir, f"{config.system}_{name.replace(':', '_')}"
                          ".hlo.txt")
      with open(path, "w") as f:
        f.write(compiled.as_text())
    yield {
        "program": name,
        "system": config.system,
        "topology": p.topology,
        "chip": p.chip.name,
        "device_kind": p.devices[0].device_kind,
        "device_count": len(p.devices),
        "devices_per_chip": roofline.devices_per_chip(p.devices),
        "image_size": config.image_size,
        "compute_dtype": config.compute_dtype,
        "global_batch": batch,
        "per_device_batch": batch // len(p.devices),
        "compile_s": round(time.perf_counter() - start, 2),
        **roofline.report(compiled, p.chip, devices=p.devices, global_batch=batch),
        "chip_figures": dataclasses.asdict(p.chip),
    }


def search_largest(measure: Callable[[int], tuple[int, float]], *,
                   start: int, limit: int, max_measures: int | None = None,
                   known: dict[int, tuple[int, float]] | None = None
                   ) -> tuple[int, int]:
  """(largest batch known to fit, smallest known not to) in [1, limit]:
  adjacent, unless `max_measures` ran out first; (0, 1) if nothing fits,
  (limit, limit + 1) if `limit` does.

  `measure(batch)` -> (bytes needed, bytes available); `known`: such
  measurements already made. Measures `start` and twice that, then guesses
  by a secant through the two largest batches measured (memory grows nearly
  linearly with the batch).
  """
  sizes: dict[int, tuple[int, float]] = dict(known or {})
  low, high = 0, limit + 1
  for batch, (needed, available) in sizes.items():
    if needed <= available:
      low = max(low, batch)
    else:
      high = min(high, batch)
  budget = [max_measures]

  def fits(batch: int) -> bool:
    if batch not in sizes:
      sizes[batch] = measure(batch)
      if budget[0] is not None:
        budget[0] -= 1
    return sizes[batch][0] <= sizes[batch][1]

  for batch in (min(start, limit), min(2 * start, limit)):
    if low < batch < high:
      if fits(batch):
        low = batch
      else:
        high = batch
  while high - low > 1 and (budget[0] is None or budget[0] > 0):
    # A batch the compiler refused outright measured math.inf: the secant
    # runs through the finite measurements, else the interval is halved.
    known = sorted(b for b in sizes if math.isfinite(sizes[b][0]))
    b0, b1 = (known[-2], known[-1]) if len(known) > 1 else (0, known[-1])
    m0 = sizes[b0][0] if b0 else 0.0
    m1, available = sizes[b1]
    slope = (m1 - m0) / (b1 - b0)
    guess = (int(b1 + (available - m1) / slope) if slope > 0
             else (low + high) // 2)
    batch = min(max(guess, low + 1), high - 1)
    if fits(batch):
      low = batch
    else:
      high = batch
  return low, high


def largest_batch(config: ml_collections.ConfigDict, topology: str, *,
                  start: int = 16, limit: int = 4096,
                  devices: list[jax.Device] | None = None,
                  max_compiles: int | None = None,
                  known: dict[int, dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
  """The largest per-chip batch whose last training phase fits the chip
  (`search_largest`, each guess compiled; `known`: reports of that program
  already compiled, by per-chip batch). Returns {'largest_per_chip_batch',
  'smallest_not_fitting' (one more, unless `max_compiles` ran out first),
  'tried': [{batch, total_bytes, fits}], 'report': the largest's report}."""
  devices = devices or topology_devices(topology)
  reports: dict[int, dict[str, Any]] = dict(known or {})

  def measure(batch: int) -> tuple[float, float]:
    p = plan(config, topology, batch, devices)
    try:
      found, = compile_programs(p, ("train",), last_phase_only=True)
    except jax.errors.JaxRuntimeError as e:
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      # XLA's TPU compiler refuses a program that cannot fit its HBM.
      logging.info("per-chip batch %d: the compiler ran out of memory",
                   batch)
      reports[batch] = {"total_bytes": math.inf, "fits": False,
                        "hbm_bytes_per_device": p.chip.hbm_bytes
                        / roofline.devices_per_chip(devices)}
      return math.inf, reports[batch]["hbm_bytes_per_device"]
    reports[batch] = found
    logging.info("per-chip batch %d: %.2f GB per device, %s", batch,
                 found["total_bytes"] / 1e9,
                 "fits" if found["fits"] else "does not fit")
    return found["total_bytes"], found["hbm_bytes_per_device"]

  largest, not_fitting = search_largest(
      measure, start=start, limit=limit, max_measures=max_compiles,
      known={b: (r["total_bytes"], r["hbm_bytes_per_device"])
             for b, r in reports.items()})
  return {"largest_per_chip_batch": largest,
          "smallest_not_fitting": not_fitting,
          "tried": [{"batch": b, "total_bytes": r["total_bytes"],
                     "fits": r["fits"]} for b, r in sorted(reports.items())],
          "report": reports.get(largest)}


def job(config: ml_collections.ConfigDict, topology: str, *,
        per_chip_batch: int | None, programs: tuple[str, ...],
        last_phase_only: bool, hlo_dir: str | None, max_batch: bool,
        max_batch_compiles: int | None) -> None:
  """The compile-only benchmark (`jaxcolor benchmark --topology`): one JSON
  line per compiled program, then with `max_batch` one for the search.

  Raises:
    ConfigError: an unknown program, topology or a config the slice cannot
      take, before anything compiles.
  """
  unknown = set(programs) - set(PROGRAMS)
  if unknown:
    raise ConfigError(f"--programs: unknown {', '.join(sorted(unknown))}; "
                      f"choose from {', '.join(PROGRAMS)}.")
  devices = topology_devices(topology)
  p = plan(config, topology, per_chip_batch, devices)
  last = phases(p.built.system, p.built.config.num_train_steps)[-1]
  known = {}
  for record in compile_programs(p, programs, last_phase_only=last_phase_only,
                                 hlo_dir=hlo_dir):
    print(json.dumps(record), flush=True)
    if record["program"] == f"train:{last}":
      known[p.per_chip_batch] = record
  if max_batch:
    found = largest_batch(config, topology, start=p.per_chip_batch,
                          devices=devices, max_compiles=max_batch_compiles,
                          known=known)
    found.pop("report")  # The sizes it tried are in "tried".
    print(json.dumps({"program": "max_batch", "system": config.system,
                      "topology": topology,
                      "compute_dtype": config.compute_dtype, **found}),
          flush=True)
