"""Huge pages for host allocations: the entry points restart once with
glibc's `glibc.malloc.hugetlb=1`, unless told not to or unable to."""

import os
import subprocess
import sys

import pytest

from jaxcolor import host_memory

# Prints the environment the (possibly restarted) process runs with, and
# how many times it started.
_PROBE = """
import os
from jaxcolor import host_memory
print("start", flush=True)
host_memory.restart_with_huge_pages()
print("tunables=" + os.environ.get("GLIBC_TUNABLES", ""))
"""


def _probe(**env):
  environ = {k: v for k, v in os.environ.items()
             if k not in ("GLIBC_TUNABLES", host_memory.OPT_OUT)}
  environ.update(env)
  out = subprocess.run([sys.executable, "-c", _PROBE], env=environ,
                       capture_output=True, text=True, check=True, timeout=60)
  return out.stdout.splitlines()


def test_restarts_once_with_the_tunable_where_it_can():
  if not host_memory.wanted({}):
    pytest.skip("no glibc >= 2.35 with transparent huge pages here")
  lines = _probe()
  assert lines.count("start") == 2  # Restarted exactly once.
  assert lines[-1] == f"tunables={host_memory.TUNABLE}=1"


def test_keeps_other_tunables_and_a_users_own_setting():
  if not host_memory.wanted({}):
    pytest.skip("no glibc >= 2.35 with transparent huge pages here")
  lines = _probe(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1000000")
  assert lines[-1] == ("tunables=glibc.malloc.trim_threshold=1000000:"
                       f"{host_memory.TUNABLE}=1")
  lines = _probe(GLIBC_TUNABLES=f"{host_memory.TUNABLE}=0")
  assert lines == ["start", f"tunables={host_memory.TUNABLE}=0"]


def test_opt_out_and_missing_support_do_not_restart(monkeypatch):
  assert _probe(**{host_memory.OPT_OUT: "0"}) == ["start", "tunables="]
  monkeypatch.setattr(host_memory, "transparent_huge_pages_available",
                      lambda: False)
  assert not host_memory.wanted({})
  monkeypatch.setattr(host_memory, "transparent_huge_pages_available",
                      lambda: True)
  monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.31")
  assert not host_memory.wanted({})
  monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.36")
  assert host_memory.wanted({}) == (sys.platform == "linux")
