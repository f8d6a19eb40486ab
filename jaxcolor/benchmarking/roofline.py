"""What a compiled program needs of a chip, and the fastest it could run.

`report` reads one compiled program: memory per device from
`memory_analysis()` (arguments, outputs, aliased donations, temporaries)
against the device's share of the chip's HBM; FLOPs and bytes per device per
step from `cost_analysis()`, and XLA's own estimate of the step time where
it gives one (`xla_optimal_s`); the collectives of the optimized HLO, with
the bytes of their results; and a roofline bound on the step time from the
chip's published figures (jaxcolor/benchmarking/chips.py): the largest of
compute (FLOPs / peak), HBM traffic (bytes / bandwidth) and collectives (a
ring's 2 (n-1)/n of the all-reduced bytes over the ICI bandwidth), as if
they overlapped perfectly. It is a lower bound on the step time, and the
MFU it implies an upper bound.
"""

import collections
import math
import re
from typing import Any

import jax

from jaxcolor.benchmarking import chips
from jaxcolor.benchmarking import flops as flops_lib

_COLLECTIVE_RE = re.compile(
    r"=\s*(?P<shape>.+?)\s+(?P<kind>all-reduce|all-gather|reduce-scatter|"
    r"collective-permute|all-to-all)(?P<start>-start)?\(")
_ARRAY_RE = re.compile(r"\b(?P<dtype>pred|[a-z]+\d+)\[(?P<dims>[\d,]*)\]")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2,
                "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8,
                "f64": 8, "c64": 8, "c128": 16}



def devices_per_chip(devices: list[jax.Device]) -> int:
  """Devices that share a chip's coordinates (2 on a deviceless v4: one per
  TensorCore; 1 elsewhere)."""
  counts = collections.Counter(tuple(getattr(d, "coords", (d.id,)))
                               for d in devices)
  return max(counts.values())


def collectives(hlo_text: str) -> list[dict[str, Any]]:
  """[{kind, count, bytes}] of the collectives in optimized HLO text: bytes
  are the results' sizes per device, summed over the instructions of a
  kind (an async pair counted once, at its start)."""
  found: dict[str, list[int]] = {}
  for match in _COLLECTIVE_RE.finditer(hlo_text):
    shapes = match.group("shape")
    if match.group("start") and match.group("kind") != "all-reduce":
      # An async start's result is (operands, results[, scratch]): the
      # last array-shaped element is the result.
      arrays = _ARRAY_RE.findall(shapes)
      shapes = f"{arrays[-1][0]}[{arrays[-1][1]}]" if arrays else ""
    size = sum(_DTYPE_BYTES.get(dtype, 4) * math.prod(
        int(d) for d in dims.split(",") if d)
        for dtype, dims in _ARRAY_RE.findall(shapes))
    count_bytes = found.setdefault(match.group("kind"), [0, 0])
    count_bytes[0] += 1
    count_bytes[1] += size
  return [{"kind": kind, "count": c, "bytes": b}
          for kind, (c, b) in sorted(found.items())]


def report(compiled: jax.stages.Compiled, chip: chips.Chip, *,
           devices: list[jax.Device], global_batch: int) -> dict[str, Any]:
  """Memory, cost, collectives and roofline bound of one compiled program
  (module docstring); every size per device."""
  per_chip = devices_per_chip(devices)
  n = len(devices)
  memory = compiled.memory_analysis()
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
           - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  hbm = chip.hbm_bytes / per_chip
  cost = flops_lib.compiled_cost(compiled)
  flops = float(cost.get("flops", 0.0))
  bytes_accessed = float(cost.get("bytes accessed", 0.0))
  found = collectives(compiled.as_text())
  compute_s = flops / (chip.peak_flops / per_chip)
  memory_s = bytes_accessed / (chip.hbm_bytes_per_s / per_chip)
  collective_s = None
  if chip.ici_bytes_per_s and n > 1:
    moved = sum(c["bytes"] * (2 if c["kind"] == "all-reduce" else 1)
                for c in found)
    collective_s = moved * (n - 1) / n / (chip.ici_bytes_per_s / per_chip)
  bound = max(compute_s, memory_s, collective_s or 0.0)
  limits = {"compute": compute_s, "memory": memory_s,
            "collectives": collective_s or 0.0}
  out = {
      "argument_bytes": memory.argument_size_in_bytes,
      "output_bytes": memory.output_size_in_bytes,
      "alias_bytes": memory.alias_size_in_bytes,
      "temp_bytes": memory.temp_size_in_bytes,
      "total_bytes": total,
      "hbm_bytes_per_device": hbm,
      "fits": total <= hbm,
      "headroom_bytes": hbm - total,
      "flops_per_device": flops,
      "bytes_accessed_per_device": bytes_accessed,
      "collectives": found,
      "compute_bound_s": compute_s,
      "memory_bound_s": memory_s,
      "collective_bound_s": collective_s,
      "step_time_bound_s": bound,
      "bound_by": max(limits, key=limits.get),
      "mfu_bound": compute_s / bound if bound > 0 else None,
      "images_per_s_bound": global_batch / bound if bound > 0 else None,
  }
  if cost.get("optimal_seconds", 0) > 0:  # Negative where XLA has none.
    out["xla_optimal_s"] = float(cost["optimal_seconds"])
  return out
