"""XLA:CPU's options for every program that runs the networks: which library
runs the convolutions (`config.cpu_conv_library`).

XLA:CPU hands matrix products, reductions and convolutions to YNNPACK. With
its own (Eigen's) convolution kernels instead, the configs' training steps
ran faster on the CPUs measured (docs/benchmarks.md, "which library
convolves"). The option lists the library fusions kept: every default one
but convolutions.
"""

import functools
import os

import jax
import jax.numpy as jnp
from absl import logging

_YNN_FUSIONS_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_WITHOUT_YNN_CONVOLUTIONS = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                             "LIBRARY_FUSION_TYPE_REDUCE")


def compiler_options(config, platform: str) -> dict[str, str] | None:
  """`jax.jit`'s `compiler_options` for programs compiled for `platform`
  that run `config`'s networks: on the CPU with `config.cpu_conv_library`
  'eigen', convolutions in XLA's own kernels instead of YNNPACK's; None
  (XLA's defaults) on every other platform, with 'ynnpack', or where the
  user's XLA_FLAGS set the same option (theirs wins)."""
  if (platform != "cpu" or config.cpu_conv_library == "ynnpack"
      or _YNN_FUSIONS_OPTION in os.environ.get("XLA_FLAGS", "")
      or not _option_supported()):
    return None
  return {_YNN_FUSIONS_OPTION: _WITHOUT_YNN_CONVOLUTIONS}


@functools.cache
def _option_supported() -> bool:
  """Whether this jaxlib's XLA:CPU knows the option's values (it is
  experimental: a later XLA may rename them); if not, XLA's defaults are
  kept, with a warning."""
  zero = jax.device_put(jnp.zeros(()), jax.devices("cpu")[0])
  try:
    jax.jit(lambda x: x + 1, compiler_options={
        _YNN_FUSIONS_OPTION: _WITHOUT_YNN_CONVOLUTIONS}).lower(zero).compile()
  except Exception as error:  # noqa: BLE001 - any refusal means: leave it.
    logging.warning("This XLA refuses %s=%s (%s); convolutions stay with "
                    "its default library.", _YNN_FUSIONS_OPTION,
                    _WITHOUT_YNN_CONVOLUTIONS, str(error).splitlines()[0])
    return False
  return True
