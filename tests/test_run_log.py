"""What a run reports: steps/s and ETA that leave out evaluation and
checkpoint time, the console line, metrics.jsonl through the logger, and
TensorBoard's event file as TensorBoard reads it."""

import io
import json
import struct
import types

import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from jaxcolor.training import run_log
from jaxcolor.training import rundir


class FakeClock:
  """A monotonic clock that moves only when the test moves it."""

  def __init__(self, start: float = 1000.0):
    self.now = start

  def __call__(self) -> float:
    return self.now


def test_rate_and_eta_leave_out_timed_blocks(monkeypatch):
  # run_log reads the time as `time.monotonic()`: its `time` is replaced
  # for this module alone, so the rates below are exact, whatever the load.
  clock = FakeClock()
  monkeypatch.setattr(run_log, "time", types.SimpleNamespace(monotonic=clock))
  progress = run_log.Progress(first_step=0, num_train_steps=12, every_steps=5)
  reports = {}
  for step in range(1, 13):
    clock.now += 0.01                     # A step: 10 ms.
    progress(step)
    if step == 7:                         # Between two reports ...
      with progress.timed("eval", wait_jax_async_dispatch=False):
        clock.now += 0.5
    if step == 10:                        # ... and right after one.
      with progress.timed("checkpoint", wait_jax_async_dispatch=False):
        clock.now += 2.0
    reports[step] = dict(progress.latest)
  # Every 5 steps and at the last; the latest report holds in between.
  assert reports[4] == {} and reports[6] == reports[9] == reports[5]
  # Steps 1-5: 5 steps in 50 ms; 6-10: 550 ms less the 500 ms of the eval;
  # 11-12: 2.02 s less the 2 s of the checkpoint. 100 steps/s throughout.
  for step, left in ((5, 7), (10, 2), (12, 0)):
    np.testing.assert_allclose(reports[step]["steps_per_second"], 100.0,
                               rtol=1e-6)
    np.testing.assert_allclose(reports[step]["eta_seconds"], left / 100.0,
                               rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(progress.time_per_part["eval"], 0.5, rtol=1e-9)
  np.testing.assert_allclose(progress.time_per_part["checkpoint"], 2.0,
                             rtol=1e-9)


def test_timed_blocks_count_only_in_their_own_interval(monkeypatch):
  # What clu's whole-interval rate would show, and this does not: the
  # interval with the evaluation looks 11 times slower.
  clock = FakeClock()
  monkeypatch.setattr(run_log, "time", types.SimpleNamespace(monotonic=clock))
  progress = run_log.Progress(first_step=100, num_train_steps=200,
                              every_steps=10)
  rates = []
  for step in range(101, 131):
    clock.now += 0.1
    if step == 115:
      with progress.timed("eval", wait_jax_async_dispatch=False):
        clock.now += 10.0
    progress(step)
    if step % 10 == 0:
      rates.append(progress.latest["steps_per_second"])
  # A resumed run counts from its first step (100), not from 0.
  np.testing.assert_allclose(rates, [10.0, 10.0, 10.0], rtol=1e-6)
  np.testing.assert_allclose(progress.latest["eta_seconds"], 70 / 10.0,
                             rtol=1e-6)


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


def _events(path) -> list[event_pb2.Event]:
  """An event file's records: TFRecord framing (length, its CRC, data, its
  CRC), read here without TensorFlow."""
  data, events, at = path.read_bytes(), [], 0
  while at < len(data):
    (length,) = struct.unpack("<Q", data[at:at + 8])
    events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
    at += 12 + length + 4
  return events


def test_tensorboard_event_file_holds_scalars_images_and_hparams(tmp_path):
  """The records `tf.summary` (clu's writer) wrote, under the same tags."""
  images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), np.uint8)
  logger = run_log.MetricLogger(rundir.RunDir(tmp_path), is_primary=True)
  logger.scalars(3, {"generator_loss": 0.25, "skipped_steps": 2,
                     "dataset": "sample"})  # Text goes to metrics.jsonl only.
  logger.images(3, {"gray_prediction_truth": images})
  logger.hparams({"system": "pix2pix", "batch_size": 4, "ema": True})
  logger.close()
  (path,) = tmp_path.glob("events.out.tfevents.*")
  events = _events(path)
  assert events[0].file_version == "brain.Event:2"
  values = {(e.step, v.tag): v for e in events[1:] for v in e.summary.value}
  assert set(values) == {
      (3, "generator_loss"), (3, "skipped_steps"),
      (3, "gray_prediction_truth"), (0, "_hparams_/session_start_info")}
  for tag, expected in (("generator_loss", 0.25), ("skipped_steps", 2.0)):
    value = values[3, tag]
    assert value.metadata.plugin_data.plugin_name == "scalars"
    assert tensor_util.make_ndarray(value.tensor) == np.float32(expected)
  value = values[3, "gray_prediction_truth"]
  assert value.metadata.plugin_data.plugin_name == "images"
  width, height, *pngs = tensor_util.make_ndarray(value.tensor)
  assert (width, height) == (b"7", b"5") and len(pngs) == 2
  for png, image in zip(pngs, images):
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))),
                                  image)
  value = values[0, "_hparams_/session_start_info"]
  assert value.metadata.plugin_data.plugin_name == "hparams"
  start = plugin_data_pb2.HParamsPluginData.FromString(
      value.metadata.plugin_data.content).session_start_info
  assert start.hparams["system"].string_value == "pix2pix"
  assert start.hparams["batch_size"].number_value == 4
  assert start.hparams["ema"].bool_value


def test_only_process_0_writes_an_event_file(tmp_path):
  logger = run_log.MetricLogger(rundir.RunDir(tmp_path), is_primary=False)
  logger.scalars(1, {"loss": 1.0})
  logger.images(1, {"grid": np.zeros((1, 2, 2, 3), np.uint8)})
  logger.close()
  assert list(tmp_path.iterdir()) == []
