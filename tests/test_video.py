"""Films: size, rate, frame count and audio kept, color smoothed within shots
and reset at cuts, and bad videos named with nothing half-written."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import helpers
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.inference import film

av = pytest.importorskip("av")


def _make_clip_module():
  spec = importlib.util.spec_from_file_location(
      "make_clip", helpers.REPO / "tools" / "make_clip.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  """A 3-shot clip of real photos (pans, zooms, cuts, a tone) and its gray."""
  root = tmp_path_factory.mktemp("clips")
  photos = sorted((helpers.REPO / "jaxcolor/sample_data/eval").glob("*.jpg"))[:3]
  _make_clip_module().make(photos, root / "truth.mp4", root / "gray.mp4",
                           frames_per_shot=12, size=(96, 64), fps=12)
  return root


@pytest.fixture(scope="module")
def colorizer(tmp_path_factory):
  run = tmp_path_factory.mktemp("video") / "run"
  helpers.make_checkpoint(helpers.load_config("configs/default.py"), run,
                          steps=(6,))
  return colorizer_lib.Colorizer.from_workdir(run, batch_size=4)


def _streams(path):
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    frames = sum(1 for _ in container.decode(video=0))
    return {"size": (stream.codec_context.width, stream.codec_context.height),
            "rate": float(stream.average_rate), "frames": frames,
            "audio": len(container.streams.audio)}


def test_video_keeps_size_rate_frames_audio_and_lightness(clips, colorizer,
                                                          tmp_path):
  target = tmp_path / "out" / "gray.mp4"
  done = film.colorize_video(colorizer, clips / "gray.mp4", target,
                              progress=False)
  assert done["frames"] == 36 and done["cuts"] == 2
  assert _streams(target) == _streams(clips / "gray.mp4") == {
      "size": (96, 64), "rate": 12.0, "frames": 36, "audio": 1}
  source, result = film.read_frames(clips / "gray.mp4"), film.read_frames(target)
  lightness = lambda rgb: np.asarray(Image.fromarray(rgb).convert("L"), float)
  # L* is the frame's own, up to H.264's lossy coding of the output.
  assert np.mean([np.abs(lightness(a) - lightness(b)).mean()
                  for a, b in zip(source, result)]) < 3.0
  assert not list(target.parent.glob(".*partial*"))


def test_smoothing_averages_within_a_shot_and_resets_at_a_cut():
  smoother = film.Smoother(strength=0.5, cut_threshold=12.0)
  photo = Image.new("RGB", (64, 64), (120, 120, 120))
  other = Image.new("RGB", (64, 64), (20, 20, 20))
  ones, threes = np.ones((4, 4, 2)), 3 * np.ones((4, 4, 2))
  np.testing.assert_allclose(smoother(photo, ones), ones)
  np.testing.assert_allclose(smoother(photo, threes), 2 * ones)  # Averaged.
  np.testing.assert_allclose(smoother(other, threes), threes)     # A cut.
  assert smoother.cuts == 1
  off = film.Smoother(strength=0.0, cut_threshold=12.0)
  off(photo, ones)
  np.testing.assert_allclose(off(photo, threes), threes)


def test_smoothing_lowers_flicker_and_keeps_cuts(clips, colorizer, tmp_path,
                                                monkeypatch):
  # A 6-step network paints almost no color (its flicker is rounding, 1e-4
  # Lab units), so each frame's a*b* get a cast of their own, as a trained
  # network's colors waver from frame to frame; the same casts both runs.
  network = colorizer.predict_ab
  figures = {}
  for strength in (0.0, 0.8):
    casts = np.random.default_rng(0)

    def wavering(images):
      return [ab + casts.uniform(-6, 6, 2).astype(np.float32)
              for ab in network(images)]
    monkeypatch.setattr(colorizer, "predict_ab", wavering)
    target = tmp_path / f"s{strength}.mp4"
    film.colorize_video(colorizer, clips / "gray.mp4", target,
                         temporal_smoothing=strength, progress=False)
    figures[strength] = film.flicker(film.read_frames(target))
  assert figures[0.0]["cuts"] == figures[0.8]["cuts"] == 2
  assert figures[0.0]["flicker"] > 1.0   # The casts show in the film.
  assert figures[0.8]["flicker"] < 0.5 * figures[0.0]["flicker"]


def test_bad_videos_are_one_line_and_leave_nothing(clips, colorizer, tmp_path):
  out = tmp_path / "out"
  not_video = tmp_path / "notes.mp4"
  not_video.write_text("not a film")
  truncated = tmp_path / "cut.mp4"
  truncated.write_bytes((clips / "gray.mp4").read_bytes()[:300])
  audio_only = tmp_path / "tone.m4a"
  with av.open(str(audio_only), "w", format="mp4") as container:
    stream = container.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32),
                                       format="fltp", layout="mono")
    frame.sample_rate, frame.pts = 16000, 0
    for packet in [*stream.encode(frame), *stream.encode()]:
      container.mux(packet)
  for path, reason in ((not_video, "not a readable video"),
                       (truncated, "not a readable video|no frames|cannot decode"),
                       (audio_only, "no video stream")):
    with pytest.raises(film.VideoError, match=reason) as error:
      film.colorize_video(colorizer, path, out / path.name, progress=False)
    assert str(path) in str(error.value)
  assert not out.exists() or not any(out.iterdir())


def test_command_line_colorizes_a_video(clips, tmp_path):
  run = tmp_path / "run"
  helpers.make_checkpoint(helpers.load_config("configs/default.py"), run,
                          steps=(6,))
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.colorize", f"--workdir={run}",
       f"--output={tmp_path / 'out'}", "--temporal_smoothing=0.5",
       str(clips / "gray.mp4"), str(tmp_path / "missing.mp4")],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]  # One input failed.
  assert "36 frames, 2 cut(s), 12 fps, 96x64" in result.stderr
  assert "Skipped " in result.stderr and "missing.mp4" in result.stderr
  assert _streams(tmp_path / "out" / "gray.mp4")["frames"] == 36
