"""JAX's persistent compilation cache for the jobs: a second run of a job
loads its compiled programs instead of compiling them again
(docs/benchmarks.md, "Command start-up")."""

import os


# Programs that compile faster than this are not worth a file: the cache
# keeps the network and step programs (seconds), not each small helper.
_MIN_COMPILE_SECONDS = 0.2
_OFF = ("off", "0", "false", "no", "none")


def compilation_cache_dir() -> str | None:
  """The folder the jobs keep compiled programs in, None for off.

  JAX's own JAX_COMPILATION_CACHE_DIR wins (JAX reads it at import); else
  JAXCOLOR_COMPILATION_CACHE (a folder, or 'off'); else the user's cache
  folder: $XDG_CACHE_HOME/jaxcolor/xla or ~/.cache/jaxcolor/xla.
  """
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  chosen = os.environ.get("JAXCOLOR_COMPILATION_CACHE", "").strip()
  if chosen.lower() in _OFF and chosen:
    return None
  if chosen:
    return os.path.expanduser(chosen)
  base = os.environ.get("XDG_CACHE_HOME", "")
  if not os.path.isabs(base):  # The XDG spec: a relative path is ignored.
    base = os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxcolor", "xla")


def use_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache for this process, before
  anything compiles; returns its folder (None: off).

  Reusing entries is safe across upgrades and machines sharing a folder:
  JAX keys each entry by the program, the jaxlib version, the backend's
  platform and version, the XLA flags and the compile options, so another
  version or device compiles afresh and never loads a stale program.
  """
  folder = compilation_cache_dir()
  if folder is None:
    return None
  import jax  # noqa: PLC0415 (not for `jaxcolor --help`)

  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", folder)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      _MIN_COMPILE_SECONDS)
  return folder
