"""Data parallelism: one device mesh, parameters replicated, batch sharded.

`jax.jit` over a `Mesh` with `NamedSharding` is JAX's current form of data
parallelism (`pmap` is in maintenance mode). The same code runs on one CPU and
on a multi-host pod: XLA inserts the gradient all-reduces, and batch norm over
a sharded batch normalizes with the global batch's statistics.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh over all (global) devices with the axis `'data'`."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,),
              axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `'data'`, the rest whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each host's share of the batch into global sharded arrays.

  Every process passes its own rows; the result has the global batch size.
  Works unchanged on one process (the local batch is the global batch).
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x),
      local_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Puts a pytree, the same on every process, on every device of the mesh.

  A jitted identity rather than `jax.device_put`: on several hosts
  device_put refuses a jax.Array (a PRNG key, say) for other processes'
  devices, while jit takes it as this process's copy of a replicated value.
  """
  return jax.jit(lambda x: x, out_shardings=replicated(mesh))(tree)
