"""Scoring saved colorizations against their true photos (`jaxcolor.score`)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor
from skimage import metrics as skmetrics

import helpers
from jaxcolor.evaluation import scoring

SAMPLE_EVAL = helpers.REPO / "jaxcolor" / "sample_data" / "eval"


def _photos(n: int) -> list[Image.Image]:
  files = sorted(SAMPLE_EVAL.glob("*.jpg"))[:n]
  return [Image.open(f).convert("RGB") for f in files]


def _gray_of(photo: Image.Image) -> np.ndarray:
  """The photo's own L* with ab = 0, as 8-bit RGB (the gray baseline)."""
  lab = skcolor.rgb2lab(np.asarray(photo) / 255.0)
  lab[..., 1:] = 0
  return np.round(np.clip(skcolor.lab2rgb(lab), 0, 1) * 255).astype(np.uint8)


@pytest.fixture()
def folders(tmp_path):
  """truth/ with five photos; predictions/ with every kind of match and fault."""
  truth, pred = tmp_path / "truth", tmp_path / "pred"
  (truth / "set").mkdir(parents=True)
  (pred / "set").mkdir(parents=True)
  (pred / "elsewhere").mkdir()
  a, b, c, d, e = _photos(5)
  a.save(truth / "set" / "exact.jpg", quality=95)
  Image.open(truth / "set" / "exact.jpg").save(pred / "set" / "exact.png")
  b.save(truth / "set" / "gray.jpg", quality=95)
  Image.fromarray(_gray_of(Image.open(truth / "set" / "gray.jpg").convert("RGB"))
                  ).save(pred / "elsewhere" / "gray.png")  # by its unique stem
  c.save(truth / "missing.jpg", quality=95)
  d.save(truth / "small.jpg", quality=95)
  d.resize((d.width // 2, d.height // 2)).save(pred / "small.png")
  e.save(truth / "broken.jpg", quality=95)
  (pred / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  return truth, pred


def test_every_fault_is_named_and_the_rest_is_scored(folders):
  truth, pred = folders
  result = scoring.score(truth, pred)
  assert result["num_scored"] == 2
  assert result["num_missing"] == 1 and result["num_failed"] == 2
  problems = result["problems"]
  assert "no prediction" in problems[str(truth / "missing.jpg")]
  assert "size mismatch" in problems[str(truth / "small.jpg")]
  assert str(pred / "small.png") in problems[str(truth / "small.jpg")]
  assert "cannot decode" in problems[str(truth / "broken.jpg")]
  assert str(pred / "broken.png") in problems[str(truth / "broken.jpg")]
  rows = {r["image"]: r for r in result["per_image"]}
  assert set(rows) == {"set/exact", "set/gray"}


def test_metrics_match_references(folders):
  truth, pred = folders
  rows = {r["image"]: r for r in scoring.score(truth, pred)["per_image"]}
  # A lossless copy of the (decoded) truth: capped PSNR, SSIM 1, ab error 0.
  exact = rows["set/exact"]
  assert exact["prediction_psnr"] == 100.0
  assert exact["prediction_ssim"] == pytest.approx(1.0, abs=1e-6)
  assert exact["prediction_ab_mae"] == pytest.approx(0.0, abs=1e-3)
  assert exact["prediction_colorfulness_difference"] == pytest.approx(0.0, abs=1e-3)
  # The gray baseline written by skimage scores as the computed gray baseline.
  gray = rows["set/gray"]
  for metric in ("psnr", "ssim", "ab_mae", "colorfulness"):
    assert gray["prediction_" + metric] == pytest.approx(
        gray["gray_" + metric], rel=2e-2, abs=0.05), metric
  true_rgb = np.asarray(Image.open(truth / "set" / "gray.jpg").convert("RGB"))
  pred_rgb = np.asarray(Image.open(pred / "elsewhere" / "gray.png"))
  assert gray["prediction_psnr"] == pytest.approx(
      skmetrics.peak_signal_noise_ratio(true_rgb, pred_rgb), abs=1e-3)
  assert gray["prediction_ssim"] == pytest.approx(
      skmetrics.structural_similarity(
          true_rgb / 255.0, pred_rgb / 255.0, gaussian_weights=True, sigma=1.5,
          use_sample_covariance=False, data_range=1, channel_axis=-1), abs=1e-4)
  assert gray["prediction_colorfulness"] < 1.0 < gray["truth_colorfulness"]


def test_ambiguous_stem_is_a_problem_not_a_guess(tmp_path):
  truth, pred = tmp_path / "t", tmp_path / "p"
  (pred / "x").mkdir(parents=True)
  (pred / "y").mkdir()
  truth.mkdir()
  photo = _photos(1)[0]
  photo.save(truth / "photo.jpg")
  photo.save(pred / "x" / "photo.png")
  photo.save(pred / "y" / "photo.png")
  result = scoring.score(truth, pred)
  assert result["num_scored"] == 0
  assert "several predictions" in result["problems"][str(truth / "photo.jpg")]


def test_missing_folder_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="--predictions"):
    scoring.score(SAMPLE_EVAL, tmp_path / "nowhere")


def test_command_line_writes_json_and_csv(folders, tmp_path):
  truth, pred = folders
  out, table = tmp_path / "out" / "results.json", tmp_path / "out" / "rows.csv"
  proc = subprocess.run(
      [sys.executable, "-m", "jaxcolor.score", f"--truth={truth}",
       f"--predictions={pred}", f"--output={out}", f"--csv={table}"],
      capture_output=True, text=True, cwd=helpers.REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "psnr" in proc.stdout and "colorfulness / truth's" in proc.stdout
  assert f"Not scored: {truth / 'missing.jpg'}" in proc.stderr
  result = json.loads(out.read_text())
  assert result["num_scored"] == 2 and result["num_missing"] == 1
  assert set(result["gray"]) == set(result["prediction"])
  with open(table) as f:
    rows = list(csv.DictReader(f))
  assert [r["image"] for r in rows] == ["set/exact", "set/gray"]
  assert not list(out.parent.glob("*.partial"))
