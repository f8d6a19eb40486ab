"""Huge pages for the host's allocations: a restart with glibc's malloc
asking the kernel for transparent huge pages.

XLA:CPU allocates every temporary buffer of a step with malloc, and glibc
serves large blocks with fresh `mmap`s, given back after the step: each
step then faults every 4 KiB page of its temporaries in again, zero-filled
by the kernel. When malloc's blocks ask for 2 MiB pages instead
(`madvise(MADV_HUGEPAGE)`, glibc's `glibc.malloc.hugetlb=1` tunable), a step
faults a few hundred pages instead of over a hundred thousand, and runs
faster (docs/benchmarks.md has the counts and times). The same holds for
host-side buffers of accelerator runs, in smaller measure.

glibc reads its tunables when the process starts, so the command-line
entry points (`python -m jaxcolor.main`, `jaxcolor.benchmark`) call
`restart_with_huge_pages` first: it re-executes the same command line, once,
with the tunable added to `GLIBC_TUNABLES`. It does nothing where the kernel
has transparent huge pages off ('never'), on glibc older than 2.35 (which
lacks the tunable) or off Linux, when `GLIBC_TUNABLES` already names
`glibc.malloc.hugetlb` (so a user's own setting wins, including
`glibc.malloc.hugetlb=0`), or with JAXCOLOR_HUGE_PAGES=0.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "JAXCOLOR_HUGE_PAGES"  # "0": leave malloc as it is.
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def restart_with_huge_pages() -> None:
  """Re-executes this process with `glibc.malloc.hugetlb=1`, if it helps.

  Returns only when no restart is needed or possible; otherwise the process
  image is replaced (same PID, arguments, environment plus the tunable), so
  call it before any other work, and from the main program only.
  """
  if not wanted(os.environ):
    return
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  env = dict(os.environ,
             GLIBC_TUNABLES=":".join(filter(None, [tunables, f"{TUNABLE}=1"])))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def wanted(environ) -> bool:
  """Whether `restart_with_huge_pages` would restart under `environ`."""
  if environ.get(OPT_OUT, "1") == "0" or TUNABLE in environ.get(
      "GLIBC_TUNABLES", ""):
    return False
  return (sys.platform == "linux" and glibc_supports_tunable()
          and transparent_huge_pages_available())


def glibc_supports_tunable() -> bool:
  """glibc >= 2.35 (the first with `glibc.malloc.hugetlb`)."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
  except (AttributeError, ValueError, OSError):
    return False  # Not glibc (musl, macOS).
  major, minor = (int(part) for part in version.split(".")[:2])
  return name == "glibc" and (major, minor) >= (2, 35)


def transparent_huge_pages_available() -> bool:
  """The kernel's THP mode is 'always' or 'madvise' (not 'never')."""
  try:
    with open(_THP_SETTING) as f:
      return "[never]" not in f.read()
  except OSError:
    return False
