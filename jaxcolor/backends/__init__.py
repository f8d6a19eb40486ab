"""Which forms the networks' convolutions take: the one place that selects.

The networks (jaxcolor/models/) compute with XLA's own convolutions
(`lax.conv_general_dilated`, differentiated by JAX), the ordinary and
fastest form on GPU and TPU. On the CPU some of their passes run in slow
forms; `xla_cpu` computes the same functions of the same parameters in
forms XLA:CPU runs fast (`xla_cpu.CpuConvForms`), which a network takes as
its `conv_backend` field. Either way the parameters are the same, so a
checkpoint trained with one runs with the other.

`config.conv_impl` chooses: 'xla', 'cpu', or 'auto', the CPU's forms for
programs compiled for the CPU and XLA's for every other platform. The
platform is the one the programs are compiled for (`System.platform`, from
the run's devices), not JAX's default backend: a CPU host compiling for a
TPU topology takes XLA's forms.

Nothing here imports JAX: the config's checks (jaxcolor/core/configuration.py)
read these names, and `xla_cpu` is imported only when selected.
"""

from jaxcolor.core.choices import CONV_IMPLS, CPU_CONV_LIBRARIES


def resolve(conv_impl: str, platform: str) -> str:
  """'xla' or 'cpu': the forms `conv_impl` takes for programs compiled for
  `platform` (a JAX platform name: 'cpu', 'gpu', 'tpu', ...)."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl={conv_impl!r}; expected one of "
                     f"{', '.join(CONV_IMPLS)}.")
  if conv_impl == "auto":
    return "cpu" if platform == "cpu" else "xla"
  return conv_impl


def select(conv_impl: str, platform: str):
  """The `conv_backend` of the networks: None (XLA's own convolutions) or
  the CPU's forms (`xla_cpu.CpuConvForms`), as `resolve` picks."""
  if resolve(conv_impl, platform) == "xla":
    return None
  from jaxcolor.backends import xla_cpu  # noqa: PLC0415 - imports JAX.
  return xla_cpu.CpuConvForms()


def compiler_options(config, platform: str) -> dict[str, str] | None:
  """`jax.jit`'s `compiler_options` for the programs that run `config`'s
  networks on `platform`: on the CPU, the convolution library
  `config.cpu_conv_library` picks (`xla_cpu.compiler_options`); None (XLA's
  defaults) on every other platform."""
  library = config.cpu_conv_library
  if library not in CPU_CONV_LIBRARIES:
    raise ValueError(f"cpu_conv_library={library!r}; expected one of "
                     f"{', '.join(CPU_CONV_LIBRARIES)}.")
  if platform != "cpu":
    return None
  from jaxcolor.backends import xla_cpu  # noqa: PLC0415 - imports JAX.
  return xla_cpu.compiler_options(config, platform)
