"""Huge pages for the host's allocations: glibc's malloc asking the kernel
for transparent huge pages, set where a process is started.

XLA:CPU allocates every temporary buffer of a step with malloc, and glibc
serves large blocks with fresh `mmap`s, given back after the step: each
step then faults every 4 KiB page of its temporaries in again, zero-filled
by the kernel. When malloc's blocks ask for 2 MiB pages instead
(`madvise(MADV_HUGEPAGE)`, glibc's `glibc.malloc.hugetlb=1` tunable), a step
faults a few hundred pages instead of over a hundred thousand, and runs
faster (docs/benchmarks.md has the counts and times). The same holds for
host-side buffers of accelerator runs, in smaller measure.

glibc reads its tunables when a process starts, so the setting belongs to
whoever starts it: the launchers in launch/ export it (keeping other
tunables, and a user's own `glibc.malloc.hugetlb`), and by hand:

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python -m jaxcolor.main ...

The entry points run in the process that was started (they do not
re-execute themselves); where the setting would help and is absent, `main`
logs `hint()` once. It helps where the kernel's transparent huge pages are
not 'never' and glibc is 2.35 or newer, on Linux.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def with_huge_pages(tunables: str) -> str:
  """`GLIBC_TUNABLES` with `glibc.malloc.hugetlb=1` added, unless it already
  sets that tunable (a user's own value, 0 included, is kept)."""
  if any(part.split("=")[0] == TUNABLE for part in tunables.split(":")):
    return tunables
  return ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))


def hint(environ=os.environ) -> str | None:
  """One line on how to turn huge pages on, where they are supported and
  not set; else None."""
  if environ.get("GLIBC_TUNABLES", "") != with_huge_pages(
      environ.get("GLIBC_TUNABLES", "")):
    if supported():
      return (f"Host allocations use 4 KiB pages: start the process with "
              f"GLIBC_TUNABLES={with_huge_pages(environ.get('GLIBC_TUNABLES', ''))} "
              "for a faster CPU step (the launchers in launch/ do; "
              "jaxcolor/runtime/host_memory.py).")
  return None


def supported() -> bool:
  """Linux, glibc >= 2.35 and transparent huge pages not 'never'."""
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
