"""FLOPs of the programs a benchmark times, and the peak rates they are set
against.

Two counts: `compiled_cost` of the program as compiled (what the devices
execute: on a CPU, the fewer products of the CPU forms), and `model_flops`
of the same program with XLA's own convolutions, lowered: the multiply-adds
of the model's direct convolutions, the usual count behind a rate and MFU.
"""

import jax
import ml_collections
from absl import logging

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


def compiled_cost(compiled) -> dict[str, float]:
  """XLA's cost analysis of a compiled or lowered program (flops, bytes
  accessed, ...); {} where the backend has none."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else {}
  return cost or {}


def with_xla_convolutions(config: ml_collections.ConfigDict
                           ) -> ml_collections.ConfigDict:
  """`config` with XLA's own convolutions (`conv_impl='xla'`): the direct
  convolutions whose multiply-adds are the model's FLOPs. The networks'
  parameters are the same in either form."""
  config = config.copy_and_resolve_references()
  config.conv_impl = "xla"
  return config


def model_flops(lowered: jax.stages.Lowered) -> float | None:
  """XLA's FLOP count of a lowered (not yet partitioned) program: the whole
  computation, all devices together; None where the backend has none."""
  try:
    return compiled_cost(lowered).get("flops")
  except Exception as e:  # noqa: BLE001 - a count is optional, the timing is not.
    logging.warning("No cost analysis of the lowered program: %s", e)
    return None
