"""Huge pages for host allocations: set where the process starts (the
launchers), composed without losing other tunables or a user's own value,
and hinted at where they would help."""

import os
import subprocess
import sys

from jaxcolor.runtime import host_memory

from helpers import REPO


def test_tunable_is_added_once_and_a_users_setting_is_kept():
  assert host_memory.with_huge_pages("") == "glibc.malloc.hugetlb=1"
  assert host_memory.with_huge_pages("glibc.malloc.trim_threshold=1000000") == (
      "glibc.malloc.trim_threshold=1000000:glibc.malloc.hugetlb=1")
  kept = "glibc.malloc.hugetlb=0:glibc.malloc.trim_threshold=5"
  assert host_memory.with_huge_pages(kept) == kept


def test_hint_only_where_supported_and_unset(monkeypatch):
  monkeypatch.setattr(host_memory, "supported", lambda: True)
  assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in host_memory.hint({})
  assert host_memory.hint({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
  monkeypatch.setattr(host_memory, "supported", lambda: False)
  assert host_memory.hint({}) is None
  monkeypatch.undo()
  monkeypatch.setattr(host_memory, "transparent_huge_pages_available",
                      lambda: True)
  monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.31")
  assert not host_memory.supported()
  monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.36")
  assert host_memory.supported() == (sys.platform == "linux")


def _dry_run(script, *args, **env):
  environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  result = subprocess.run(["bash", str(REPO / "launch" / script), *args],
                          capture_output=True, text=True, timeout=60,
                          env=dict(environ, DRY_RUN="1", **env))
  assert result.returncode == 0, result.stderr
  return result.stdout


def test_launchers_start_processes_with_huge_pages():
  out = _dry_run("slurm_gpu.sbatch", "--config", "configs/pix2pix.py",
                 "--workdir", "/tmp/w",
                 GLIBC_TUNABLES="glibc.malloc.trim_threshold=5")
  assert ("GLIBC_TUNABLES=glibc.malloc.trim_threshold=5:"
          "glibc.malloc.hugetlb=1") in out.replace("\\", "")
  out = _dry_run("tpu_pod.sh", "--config", "configs/pix2pix.py",
                 TPU_NAME="t", ZONE="z", WORKDIR="gs://b/r",
                 ACCELERATOR_TYPE="v4-8")
  assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in out.replace("\\", "")
