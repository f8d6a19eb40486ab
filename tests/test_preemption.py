"""Kills and preemption of a real training process (`python -m jaxcolor.main`).

SIGKILL at any moment, a checkpoint write included, loses nothing beyond the
last complete checkpoint: every checkpoint left behind restores, and
rerunning the same command resumes and ends with the same parameters and
losses as a run never interrupted. SIGTERM saves a checkpoint at the step
reached and exits 0; on several processes, at the step they all agree on.

The runs are the smoke networks at 32 px on one device: each subprocess costs
its start-up (imports, restore, compiled steps from the persistent cache that
tests/conftest.py sets up), so few runs share one uninterrupted reference.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import REPO, load_config, train_lines

from jaxcolor import systems
from jaxcolor.training import checkpointing

# One worker runs the whole file: its tests share a module-scoped run
# (`python -m pytest -n 2` distributes with --dist loadgroup, pyproject.toml).
pytestmark = pytest.mark.xdist_group("preemption")

LAUNCH = REPO / "launch" / "local_multiprocess.sh"
STEPS = 24
# Every step logged, a checkpoint every 4 steps (`_Run`), one evaluation at
# the end.
OVERRIDES = ("--config.log_every_steps=1", "--config.eval_every_steps=1000",
             "--config.image_every_steps=1000", "--config.num_eval_images=8",
             "--config.eval_batch_size=8")
TIMEOUT = 300  # Seconds per run: a hang fails instead of blocking the suite.


class _Run:
  """`python -m jaxcolor.main` on `workdir` in its own session, its output
  (absl's log: one line per step) in `<workdir>_<n>.log`; with `processes`
  > 1, as that many processes of a simulated pod (launch/local_multiprocess.sh,
  4 CPU devices each; the log is process 0's)."""

  def __init__(self, workdir, n: int, *, steps: int = STEPS,
               checkpoint_every: int = 4, processes: int = 1,
               extra: tuple[str, ...] = ()):
    self.workdir, self.steps = workdir, steps
    self.log = workdir.parent / f"{workdir.name}_{n}.log"
    command = [sys.executable, "-m", "jaxcolor.main", "--config",
               f"{REPO / 'configs/pix2pix.py'}:smoke", "--workdir",
               str(workdir), *OVERRIDES, f"--config.num_train_steps={steps}",
               f"--config.checkpoint_every_steps={checkpoint_every}", *extra]
    env = dict(os.environ)
    if processes > 1:
      command = ["bash", str(LAUNCH), "-n", str(processes), "-d", "4", "--",
                 *command]
      env.update(PYTHON=sys.executable,
                 JAXCOLOR_LOG_DIR=f"{workdir}_{n}_processes")
      env.pop("XLA_FLAGS", None)
    with self.log.open("w") as log:
      self.process = subprocess.Popen(
          command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir.parent,
          env=env, start_new_session=True)
    self.start = time.monotonic()
    _RUNNING.append(self)

  def text(self) -> str:
    return self.log.read_text()

  def last_step(self) -> int:
    """The last step this run has logged (0: none yet)."""
    return max(map(int, re.findall(rf"\] step (\d+)/{self.steps} ",
                                   self.text())), default=0)

  def wait_for(self, condition) -> None:
    """Polls `condition()` every few milliseconds until it holds."""
    while not condition():
      if self.process.poll() is not None:
        pytest.fail(f"the run ended (exit {self.process.returncode}) before "
                    f"the moment to interrupt it:\n{self.text()[-3000:]}")
      if time.monotonic() - self.start > TIMEOUT:
        pytest.fail(f"no moment to interrupt the run within {TIMEOUT} s:\n"
                    f"{self.text()[-3000:]}")
      time.sleep(0.002)

  def kill(self, sig=signal.SIGKILL) -> None:
    os.killpg(self.process.pid, sig)

  def finish(self) -> int:
    try:
      left = TIMEOUT - (time.monotonic() - self.start)
      return self.process.wait(timeout=max(left, 1))
    except subprocess.TimeoutExpired:
      self.kill()
      self.process.wait()
      pytest.fail(f"the run hung:\n{self.text()[-3000:]}")


_RUNNING: list[_Run] = []


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
  """SIGKILLs what a failed test left running (SIGTERM would not stop a
  process of a pod: JAX's preemption service catches it)."""
  yield
  while _RUNNING:
    run = _RUNNING.pop()
    if run.process.poll() is None:
      run.kill()
      run.process.wait()


def _complete(run: _Run) -> None:
  assert run.finish() == 0, run.text()[-3000:]


def _temporary_steps(workdir) -> set[int]:
  """Steps whose checkpoint Orbax is writing (or was, when killed)."""
  return {int(p.name.split(".")[0])
          for p in (workdir / "checkpoints").glob("*.orbax-checkpoint-tmp*")}


def _newest_checkpoint(workdir) -> int | None:
  """The newest complete checkpoint's step (Orbax only lists complete ones)."""
  steps = [int(p.name) for p in (workdir / "checkpoints").glob("*")
           if p.name.isdigit()] if (workdir / "checkpoints").exists() else []
  return max(steps, default=None)


def _restore_all(workdir) -> dict:
  """Every complete checkpoint, restored: step -> state (on the host)."""
  config = load_config("configs/pix2pix.py")
  abstract = jax.eval_shape(systems.create(config).init, jax.random.key(0))
  directory = workdir / "checkpoints"
  if not directory.exists():
    return {}
  checkpointer = checkpointing.Checkpointer(directory, keep=100)
  try:
    states = {}
    for step in checkpointer.all_steps():
      states[step] = jax.device_get(checkpointer.restore(step, abstract))
      assert int(states[step]["step"]) == step
      data = directory / str(step) / "data_iter" / "process_0-of-1.json"
      assert json.loads(data.read_text()), data
    return states
  finally:
    checkpointer.close()


def _assert_same_run(workdir, reference) -> None:
  """Same final state, leaf by leaf and bit for bit, and the same losses at
  every step as the uninterrupted run."""
  final_state, reference_lines = reference
  state = _restore_all(workdir)[STEPS]
  leaves, expected = jax.tree.leaves(state), jax.tree.leaves(final_state)
  assert len(leaves) == len(expected)
  for got, want in zip(leaves, expected):  # Params, batch stats, Adam moments.
    np.testing.assert_array_equal(got, want)
  lines = train_lines(workdir)
  assert sorted(lines) == list(range(1, STEPS + 1))
  for step, line in lines.items():
    for key, value in reference_lines[step].items():
      if "loss" in key or "score" in key:
        assert line[key] == value, f"{key} at step {step}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run: final state and train lines of metrics.jsonl."""
  workdir = tmp_path_factory.mktemp("preemption") / "uninterrupted"
  _complete(_Run(workdir, 0))
  return _restore_all(workdir)[STEPS], train_lines(workdir)


def _after_some_steps(run: _Run, rng: random.Random) -> None:
  """A random moment some steps after this run completed a checkpoint of
  its own (so each run moves the newest checkpoint on)."""
  resumed_from = _newest_checkpoint(run.workdir) or 0
  extra = rng.randint(0, 3)
  run.wait_for(lambda: (_newest_checkpoint(run.workdir) or 0) > resumed_from
               and run.last_step() >= _newest_checkpoint(run.workdir) + extra)
  time.sleep(rng.uniform(0.0, 0.15))


def _during_a_checkpoint_write(run: _Run, rng: random.Random) -> None:
  """While Orbax writes a checkpoint, once this run has completed one of its
  own (so that a complete checkpoint precedes the write cut short)."""
  del rng
  resumed_from = _newest_checkpoint(run.workdir) or 0

  def writing() -> bool:
    newest = _newest_checkpoint(run.workdir) or 0
    return newest > resumed_from and any(
        step > newest for step in _temporary_steps(run.workdir))

  run.wait_for(writing)


def _kill_at(moment, workdir, n: int, rng: random.Random) -> _Run:
  """Runs, SIGKILLs at `moment`, checks that nothing completed was lost."""
  before = _newest_checkpoint(workdir)
  run = _Run(workdir, n)
  moment(run, rng)
  run.kill()
  run.finish()
  if before is not None:
    assert f"Resuming from the checkpoint at step {before} " in run.text()
  # Every checkpoint left behind restores, and the newest is no older.
  restored = _restore_all(workdir)
  assert before is None or max(restored) >= before, sorted(restored)
  return run


def _sigterm(workdir, n: int, rng: random.Random) -> int:
  """Runs, SIGTERMs a few steps after the resumed one, checks the clean stop
  and its checkpoint; returns the step it stopped at."""
  resumed_from = _newest_checkpoint(workdir) or 0
  run = _Run(workdir, n)
  # The signal lands while the step after the one logged runs, where the
  # run stops: aim that off the every-4-steps schedule, for an extra save.
  target = rng.choice([step for step in range(resumed_from + 2,
                                              resumed_from + 8)
                       if (step + 1) % 4])
  run.wait_for(lambda: run.last_step() >= target)
  run.kill(signal.SIGTERM)
  assert run.finish() == 0, run.text()[-3000:]
  text = run.text()
  assert "SIGTERM received" in text and "Traceback" not in text
  stopped = [line for line in text.splitlines() if "Stopping at step" in line]
  assert len(stopped) == 1, text[-3000:]
  assert "checkpoint saved" in stopped[0], stopped[0]
  step = int(stopped[0].split("Stopping at step ")[1].split()[0])
  assert target <= step < STEPS
  # The checkpoint is at the step reached, and the log ends there too.
  assert _newest_checkpoint(workdir) == step
  assert max(train_lines(workdir)) == step
  return step


def test_sigkill_in_a_checkpoint_write_and_sigterm_then_rerun(
    tmp_path, reference):
  rng = random.Random(8)
  workdir = tmp_path / "interrupted"
  _kill_at(_during_a_checkpoint_write, workdir, 1, rng)
  # The write that was cut short left its temporary directory, not a step.
  assert _temporary_steps(workdir), sorted(
      p.name for p in (workdir / "checkpoints").iterdir())
  stopped = _sigterm(workdir, 2, rng)
  rerun = _Run(workdir, 3)
  _complete(rerun)
  assert f"Resuming from the checkpoint at step {stopped} " in rerun.text()
  _assert_same_run(workdir, reference)


@pytest.mark.slow
def test_sigkill_at_three_random_moments_then_rerun(tmp_path, reference):
  rng = random.Random(3)
  workdir = tmp_path / "killed"
  moments = (_after_some_steps, _during_a_checkpoint_write, _after_some_steps)
  for n, moment in enumerate(moments, start=1):
    _kill_at(moment, workdir, n, rng)
  rerun = _Run(workdir, len(moments) + 1)
  _complete(rerun)
  assert "Resuming from the checkpoint" in rerun.text()
  _assert_same_run(workdir, reference)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
  """On a pod a SIGTERM reaches the hosts at different steps, or only some:
  JAX's preemption service agrees on one step, and both processes save it
  together and exit 0."""
  workdir = tmp_path / "pod"
  steps = 200
  # The learning-rate schedule of tests/test_distributed.py's 4-step runs
  # (the rate is 0 from step 4; only the stop matters here), so the same
  # compiled step serves both (the schedule is part of the program).
  run = _Run(workdir, 1, steps=steps, checkpoint_every=100, processes=2,
             extra=("--config.optimizer.constant_steps=1",))

  def process_1():
    for child in subprocess.run(["pgrep", "-P", str(run.process.pid)],
                                capture_output=True, text=True).stdout.split():
      environ = open(f"/proc/{child}/environ", "rb").read().split(b"\0")
      if b"JAXCOLOR_PROCESS_ID=1" in environ:
        return int(child)
    return None

  run.wait_for(lambda: run.last_step() >= 3)
  os.kill(process_1(), signal.SIGTERM)  # Not to process 0.
  assert run.finish() == 0, run.text()[-3000:]
  logs = [run.text(), (tmp_path / "pod_1_processes/process_1.log").read_text()]
  stopped = [re.findall(r"Stopping at step (\d+) on a preemption notice", log)
             for log in logs]
  assert stopped[0] and stopped[0] == stopped[1], (stopped, logs[0][-3000:])
  step = int(stopped[0][0])
  assert 3 < step < steps
  assert _newest_checkpoint(workdir) == step
  data_files = (workdir / f"checkpoints/{step}/data_iter").glob("*.json")
  assert sorted(p.name for p in data_files) == ["process_0-of-2.json",
                                                "process_1-of-2.json"]
  assert max(train_lines(workdir)) == step
