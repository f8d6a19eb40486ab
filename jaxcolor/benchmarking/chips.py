"""Published figures of the accelerators a plan is made for.

A compile-only report (jaxcolor/benchmarking/compile_only.py) turns XLA's per-chip FLOP
and byte counts into a lower bound on the step time with these numbers: the
vendor's peak dense bfloat16 rate, HBM capacity and bandwidth, and the
inter-chip interconnect (ICI) bandwidth. They are data-sheet figures, not
measurements; `source` says where each chip's come from. float32 matrix
products at JAX's default precision run as bfloat16 passes on a TPU's MXUs,
so the same peak bounds both compute dtypes.
"""

import dataclasses

from jaxcolor.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip (one JAX device) and its published figures.

  Attributes:
    name: what the vendor calls it ('TPU v5e').
    device_kind: what JAX's `device.device_kind` says for it.
    peak_flops: peak dense bfloat16 FLOP/s of the chip.
    hbm_bytes: HBM capacity of the chip, bytes.
    hbm_bytes_per_s: HBM bandwidth, bytes/s.
    ici_bytes_per_s: bidirectional inter-chip bandwidth of the chip,
      bytes/s; None where the data sheet gives none.
    source: the page the figures come from.
  """
  name: str
  device_kind: str
  peak_flops: float
  hbm_bytes: float
  hbm_bytes_per_s: float
  ici_bytes_per_s: float | None
  source: str


GIB = 2**30

# Keyed by the version in a topology name ('v5e:4x4').
CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", "TPU v4", 275e12, 32 * GIB, 1200e9, None,
               "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", "TPU v5 lite", 197e12, 16e9, 819e9, 400e9,
                "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", "TPU v5", 459e12, 95e9, 2765e9, 4800e9 / 8,
                "https://cloud.google.com/tpu/docs/v5p"),
}


def for_topology(topology: str) -> Chip:
  """The chip of a topology name such as 'v5e:4x4' or 'v5p:4x4x4'.

  Raises:
    ConfigError: the version is not one whose figures are known.
  """
  version = topology.split(":", 1)[0].strip().lower()
  if version not in CHIPS:
    raise ConfigError(
        f"--topology={topology!r}: no published figures for {version!r} "
        f"here; known: {', '.join(sorted(CHIPS))} (jaxcolor/benchmarking/chips.py).")
  return CHIPS[version]
