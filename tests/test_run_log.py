"""What a run reports: steps/s and ETA that leave out evaluation and
checkpoint time, the console line, and metrics.jsonl through the logger."""

import json
import time

import numpy as np

from jaxcolor import run_log
from jaxcolor import rundir


def test_rate_and_eta_leave_out_timed_blocks():
  progress = run_log.Progress(first_step=0, num_train_steps=20, every_steps=5)
  step_s, eval_s = 0.01, 0.5
  for step in range(1, 11):
    time.sleep(step_s)
    progress(step)
    if step == 7:
      with progress.timed("eval", wait_jax_async_dispatch=False):
        time.sleep(eval_s)
  rate = progress.latest["steps_per_second"]
  # Counting the evaluation, steps 6-10 ran at 5 / 0.55 = 9 steps/s.
  assert rate > 3 * 5 / (eval_s + 5 * step_s), rate
  assert np.isclose(progress.latest["eta_seconds"], 10 / rate)


def test_console_line_and_metrics_jsonl(tmp_path):
  line = run_log.format_line(50, 1000, {"generator_loss": 1.5,
                                        "learning_rate": 2e-4,
                                        "steps_per_second": 2.0,
                                        "eta_seconds": 475.0})
  assert line == "step 50/1000 generator_loss=1.5 | 2.00 steps/s | ETA 7m55s"
  assert run_log.mean_metrics([{"a": 1.0}, {"a": 3.0, "b": 2.0}]) == {
      "a": 2.0, "b": 2.0}  # Each over the steps that report it.

  run_dir = rundir.RunDir(tmp_path)
  logger = run_log.MetricLogger(run_dir, is_primary=True)
  logger.scalars(2, {"loss": np.float32(0.5), "bad": float("nan")})
  logger.scalars(4, {"loss": 0.25})
  logger.truncate_after(2)  # A resume from step 2 logs step 4 again.
  logger.close()
  lines = [json.loads(l) for l in run_dir.metrics_path.read_text().splitlines()]
  assert lines == [{"step": 2, "loss": 0.5, "bad": "nan"}]
