"""Multi-host start-up: `jax.distributed.initialize` when the launch asks for it.

Every host runs the same command, one process per host (a TPU VM worker, a
Slurm task, or one of N processes on one machine). Turned on by main's
`--distributed` flag or by JAXCOLOR_DISTRIBUTED=1. Then:

  - on Cloud TPU pods, Slurm, Open MPI and Kubernetes JAX finds the
    coordinator, the process count and this process's id itself;
  - anywhere else, or to override detection, set JAXCOLOR_COORDINATOR
    (host:port of process 0; JAX's own JAX_COORDINATOR_ADDRESS also works),
    JAXCOLOR_NUM_PROCESSES and JAXCOLOR_PROCESS_ID.

JAX's own variables still apply: JAX_LOCAL_DEVICE_IDS (this process's GPUs;
under Slurm JAX defaults to one GPU per task) and JAX_NUM_CPU_DEVICES
(simulated CPU devices per process, as launch/local_multiprocess.sh uses).

After initialization `jax.devices()` lists every host's devices; the mesh in
`jaxcolor.core.parallel` spans them all, each process feeds its own rows of the
batch, and XLA's collectives cross hosts (gloo on CPU, NCCL on GPU, ICI/DCN
on TPU). It must run before anything touches a device.
"""

import dataclasses
import os
from typing import Mapping

import jax
from absl import logging

from jaxcolor.runtime import host_memory

ENABLE = "JAXCOLOR_DISTRIBUTED"
COORDINATOR = "JAXCOLOR_COORDINATOR"
NUM_PROCESSES = "JAXCOLOR_NUM_PROCESSES"
PROCESS_ID = "JAXCOLOR_PROCESS_ID"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Arguments for `jax.distributed.initialize`; None: JAX detects it."""
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def requested(environ: Mapping[str, str] | None = None) -> bool:
  """Whether JAXCOLOR_DISTRIBUTED asks for multi-host start-up."""
  environ = os.environ if environ is None else environ
  value = environ.get(ENABLE, "").strip().lower()
  if value not in _TRUE + _FALSE:
    raise ValueError(f"{ENABLE}={environ[ENABLE]!r}: expected 1 or 0.")
  return value in _TRUE


def _int(environ: Mapping[str, str], name: str, minimum: int) -> int | None:
  if not environ.get(name):
    return None
  try:
    value = int(environ[name])
  except ValueError:
    value = None
  if value is None or value < minimum:
    raise ValueError(f"{name}={environ[name]!r}: expected an integer >= {minimum}.")
  return value


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
  """The explicit layout from JAXCOLOR_* variables (unset: None each)."""
  environ = os.environ if environ is None else environ
  settings = Settings(
      coordinator_address=environ.get(COORDINATOR) or None,
      num_processes=_int(environ, NUM_PROCESSES, 1),
      process_id=_int(environ, PROCESS_ID, 0))
  if (settings.num_processes is not None and settings.process_id is not None
      and settings.process_id >= settings.num_processes):
    raise ValueError(f"{PROCESS_ID}={settings.process_id} must be below "
                     f"{NUM_PROCESSES}={settings.num_processes}.")
  return settings


def initialize(enable: bool = False,
               environ: Mapping[str, str] | None = None) -> bool:
  """Starts `jax.distributed` if `enable` or JAXCOLOR_DISTRIBUTED asks.

  Returns whether this process is part of a multi-process run. Calling it
  again is harmless.
  """
  if not (enable or requested(environ)):
    return False
  if jax.distributed.is_initialized():
    return True
  settings = settings_from_env(environ)
  jax.distributed.initialize(
      coordinator_address=settings.coordinator_address,
      num_processes=settings.num_processes,
      process_id=settings.process_id)
  return True


def start_process(enable: bool = False) -> None:
  """A training or evaluation process's start: `initialize`, then one log
  line of what this process sees (and, on a CPU, how to turn huge pages on:
  jaxcolor/runtime/host_memory.py)."""
  initialize(enable)
  logging.info("JAX %s: process %d of %d, %d local / %d global devices (%s).",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[0].device_kind)
  if jax.default_backend() == "cpu" and host_memory.hint():
    logging.info("%s", host_memory.hint())
