"""Which JAX backends a command starts: the CPU alone where no accelerator
is attached.

With no `JAX_PLATFORMS` set, JAX initialises every backend it has a plugin
for. Where the `libtpu` package is installed (the `tpu` and `test` extras,
for compiling TPU programs on any host) that includes the TPU runtime,
which on a machine without a TPU prints several lines of errors about TPU
worker hostnames and takes a lock file shared by all processes, before JAX
falls back to the CPU. `pin_cpu_without_accelerators` makes the CPU the only
backend on a machine with no TPU, NVIDIA or AMD device: the backend JAX
would have chosen, without loading the TPU runtime to learn it. A machine
with an accelerator, or a user's own `JAX_PLATFORMS`, is left alone.

`allow_shared_libtpu` lets several processes on one host load libtpu to
compile for a TPU topology (jaxcolor/benchmarking/compile_only.py): libtpu's lock file
guards TPU chips, of which such a host has none.
"""

import glob
import os
import pathlib

import jax

_GOOGLE_PCI_VENDOR = "0x1ae0"      # TPU chips appear as Google PCI devices.
_ACCELERATOR_DEVICE_FILES = (
    "/dev/nvidia0", "/dev/nvidiactl",  # NVIDIA GPUs (bare metal, containers)
    "/dev/dxg",                         # GPUs under WSL2
    "/dev/kfd",                         # AMD GPUs (ROCm)
)


def accelerator_attached() -> bool:
  """Whether this machine shows a TPU, NVIDIA or AMD device (PCI vendor ids
  and device files only: no runtime is loaded)."""
  if any(os.path.exists(path) for path in _ACCELERATOR_DEVICE_FILES):
    return True
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      if pathlib.Path(vendor).read_text().strip() == _GOOGLE_PCI_VENDOR:
        return True
    except OSError:
      continue
  return False


def pin_cpu_without_accelerators() -> bool:
  """Makes the CPU JAX's only backend when no accelerator is attached and
  the user chose no platforms; True when it did. Call before any device is
  touched."""
  if os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms:
    return False
  if accelerator_attached():
    return False
  jax.config.update("jax_platforms", "cpu")
  return True


def allow_shared_libtpu() -> None:
  """Lets this process load libtpu while another holds its lock file (see
  the module docstring); for compile-only use on hosts without TPU chips."""
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
