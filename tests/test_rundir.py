"""One live run per workdir: a second run on a held workdir is refused with
one line naming the holder, and a killed holder leaves no lock behind."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from jaxcolor.training import rundir

from helpers import REPO

_HOLD = """
import sys
from jaxcolor.training import rundir
rundir.acquire(sys.argv[1], name=sys.argv[2], process_index=0)
print("held", flush=True)
sys.stdin.read()  # Until killed.
"""


def _holder(workdir, name=rundir.LOCK_NAME) -> subprocess.Popen:
  """Another process that takes the lock and keeps it until killed."""
  process = subprocess.Popen([sys.executable, "-c", _HOLD, str(workdir), name],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
  assert process.stdout.readline().strip() == "held"
  return process


def test_second_process_is_refused_until_the_holder_is_killed(tmp_path):
  holder = _holder(tmp_path)
  try:
    with pytest.raises(rundir.WorkdirLockedError) as error:
      rundir.acquire(tmp_path, process_index=0)
    message = str(error.value)
    assert str(tmp_path) in message
    assert f"pid {holder.pid} on host {socket.gethostname()}" in message
    assert "started 20" in message
    # The evaluation lock is another: evaluating a training run is allowed.
    evaluation = rundir.acquire(tmp_path, name=rundir.EVAL_LOCK_NAME,
                                      process_index=0)
    assert evaluation.held
    evaluation.release()
  finally:
    holder.send_signal(signal.SIGKILL)  # No clean-up runs: the kernel frees it.
    holder.wait()
  lock = rundir.acquire(tmp_path, process_index=0)
  assert lock.held
  recorded = json.loads((tmp_path / rundir.LOCK_NAME).read_text())
  assert recorded["pid"] == os.getpid()
  # Runs in one process are sequential: the holder may take it again.
  assert rundir.acquire(tmp_path, process_index=0) is lock
  lock.release()


def test_evaluation_runs_exclude_each_other(tmp_path):
  holder = _holder(tmp_path, rundir.EVAL_LOCK_NAME)
  try:
    with pytest.raises(rundir.WorkdirLockedError,
                       match=f"evaluation run of pid {holder.pid}"):
      rundir.acquire(tmp_path, name=rundir.EVAL_LOCK_NAME,
                           process_index=0)
  finally:
    holder.kill()
    holder.wait()


def test_no_lock_on_other_hosts_or_remote_workdirs(tmp_path):
  assert not rundir.acquire(tmp_path, process_index=1).held
  assert not rundir.acquire("gs://bucket/run", process_index=0).held
  assert not (tmp_path / rundir.LOCK_NAME).exists()


def test_cli_refuses_a_held_workdir_in_one_line(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  lock = rundir.acquire(workdir, process_index=0)
  try:
    result = subprocess.run(
        [sys.executable, "-m", "jaxcolor.main", "--config",
         str(REPO / "configs/default.py") + ":smoke", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
  finally:
    lock.release()
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  lines = [l for l in result.stderr.splitlines()
           if l.startswith("Configuration error")]
  assert len(lines) == 1, result.stderr[-2000:]
  assert f"Workdir {workdir} is in use by a run of pid {os.getpid()}" in lines[0]
  assert not (workdir / "config.json").exists()  # The live run's is safe.
