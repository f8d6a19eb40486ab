"""The model the package ships (jaxcolor/pretrained/): a checked artifact
within its size, its card in step with it, and what `colorize` and `serve`
use when told neither a run nor a model; a missing one is named."""

import hashlib
import http.client
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import helpers
from jaxcolor.core import color_space
from jaxcolor.core.errors import ArtifactError
from jaxcolor.inference import artifact
from jaxcolor.inference import colorize_job
from jaxcolor.inference import shipped_model

PHOTO = helpers.REPO / "jaxcolor" / "sample_data" / "eval" / "bsds_test_140006.jpg"


def test_the_shipped_artifact_is_checked_small_and_its_card_matches():
  meta, arrays = artifact.read(shipped_model.directory())
  weights = shipped_model.DIRECTORY / artifact.VARIABLES
  assert weights.stat().st_size <= 25 * 10**6
  assert meta["weights_dtype"] == "bfloat16"
  kernels = [a for path, a in arrays.items() if path.endswith("/kernel")]
  assert kernels and all(a.dtype.name == "bfloat16" for a in kernels)
  config = meta["config"]
  assert config["generator"]["ab_bins"] is True
  card = shipped_model.CARD.read_text()
  # The temperature chosen on the run's held-out split travelled with it.
  temperature = config["generator"]["bins_temperature"]
  assert f"| decoding temperature | {temperature:g}," in card
  digest = hashlib.sha256(weights.read_bytes()).hexdigest()
  assert digest == meta["files"][artifact.VARIABLES]
  assert digest in card, "the model card describes other weights"
  assert f"step {meta['step']:,}" in card
  assert "configs/cpu_2h.py" in card and "imagenet_test" in card


def _chroma(rgb: np.ndarray) -> float:
  lab = np.asarray(color_space.rgb_to_lab(rgb.astype(np.float32) / 255.0))
  return float(np.hypot(lab[..., 1], lab[..., 2]).mean())


def test_colorize_without_a_model_uses_the_shipped_one(tmp_path):
  out = tmp_path / "out"
  gray = tmp_path / "in" / "gray.png"
  gray.parent.mkdir()
  Image.open(PHOTO).convert("L").save(gray)
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.colorize", f"--output={out}", str(gray)],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "using the shipped model cpu_2h" in result.stderr
  colorized = np.asarray(Image.open(out / "gray.png"))
  assert colorized.shape == np.asarray(Image.open(PHOTO)).shape
  # Colour where the input had none: a gray photo's chroma is 0.
  assert _chroma(colorized) > 5.0


def test_serve_without_a_model_serves_the_shipped_one():
  process = subprocess.Popen(
      [sys.executable, "-m", "jaxcolor.serve", "--port=0"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = process.stdout.readline()
    assert "on http://127.0.0.1:" in line, (
        line, process.stderr.read()[-2000:] if process.poll() is not None
        else "")
    port = int(line.split("127.0.0.1:")[1].split("/")[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request("GET", "/api/info")
    info = json.loads(connection.getresponse().read())
    connection.close()
    meta = json.loads((shipped_model.DIRECTORY / "model.json").read_text())
    assert info["step"] == meta["step"]
  finally:
    process.terminate()
    process.wait(timeout=30)


def test_a_missing_shipped_model_is_named(tmp_path, monkeypatch):
  missing = tmp_path / "pretrained" / "cpu_2h"
  monkeypatch.setattr(shipped_model, "DIRECTORY", missing)
  options = colorize_job.Options(output=str(tmp_path / "out"))
  with pytest.raises(ArtifactError, match="is not installed: pass --model"):
    colorize_job.run([str(PHOTO)], options, "jaxcolor colorize")
  assert str(missing) in shipped_model.notice()
  assert not (tmp_path / "out").exists()


def test_a_run_and_a_model_together_are_refused(tmp_path):
  options = colorize_job.Options(output=str(tmp_path / "out"),
                                 workdir="runs/x", model="models/y")
  with pytest.raises(colorize_job.UsageError, match="not both"):
    colorize_job.run([str(PHOTO)], options, "jaxcolor colorize")
