"""Test set-up: 8 simulated CPU devices, so sharded code runs as on a pod slice.

`jax_num_cpu_devices` must be set before any device is touched, hence here.

Compilation dominates the suite's time on a CPU, and many tests compile the
same step (in-process and in the `python -m jaxcolor.main` subprocesses), so
the suite shares one persistent compilation cache, through environment
variables that the subprocesses inherit.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# A CPU suite: JAX starts no other backend, so an installed libtpu (the test
# extra's, for tests/test_compile_only.py) is neither loaded nor locked by
# each process (jaxcolor/runtime/platforms.py).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"jaxcolor-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# The suite's programs are small and run a few steps each: LLVM's costlier
# optimizations take more compile time than they save (the suite's cold time
# drops by about a third; docs/design.md, "Tests"). Semantics do not change,
# and every comparison the tests make is between programs built alike.
# Benchmarks and real runs keep XLA's defaults.
_FAST_COMPILE = ("--xla_backend_optimization_level=0",
                 "--xla_llvm_disable_expensive_passes=true")
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), *_FAST_COMPILE]).strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)



import pytest  # noqa: E402


@pytest.fixture
def one_device():
  """The jobs run in-process in this test build their mesh on one of the 8
  simulated devices (helpers.one_device_mesh)."""
  import helpers  # noqa: PLC0415 (after the device count is set above)
  with helpers.one_device_mesh():
    yield
