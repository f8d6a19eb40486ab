"""Evaluation: the metrics over a split against independent computations, and
evaluation runs on a checkpoint (JSON, HTML report, TensorBoard scalars)."""

import json
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor
from skimage import metrics as skmetrics

import helpers
from jaxcolor import backends
from jaxcolor import data
from jaxcolor import systems
from jaxcolor.core import configuration
from jaxcolor.core import parallel
from jaxcolor.evaluation import checkpoints
from jaxcolor.evaluation import evaluator as evaluator_lib
from jaxcolor.evaluation import fid
from jaxcolor.training import experiment


def _stand_in_features(rgb: jax.Array) -> jax.Array:
  """A cheap 15-d image descriptor in place of Inception: channel means and
  a 2 x 2 grid of mean colors."""
  b, h, w, _ = rgb.shape
  grid = rgb.reshape(b, 2, h // 2, 2, w // 2, 3).mean(axis=(2, 4))
  return jnp.concatenate([rgb.mean(axis=(1, 2)), grid.reshape(b, -1)], axis=-1)


def _eval_images(num_images: int, size: int) -> np.ndarray:
  batches = data.create_eval_batches("sample", image_size=size, batch_size=8,
                                     num_images=num_images)
  return np.concatenate([b["image"][b["mask"]] for b in batches])


def _gray_baseline(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """scikit-image's Lab of the photos, and the 8-bit photos with a*b* = 0."""
  lab = skcolor.rgb2lab(images / 255.0)
  gray_lab = lab.copy()
  gray_lab[..., 1:] = 0.0
  gray = np.round(np.clip(skcolor.lab2rgb(gray_lab), 0, 1) * 255) / 255
  return lab, gray


def test_evaluator_metrics_match_independent_computation():
  config = helpers.load_config("configs/pix2pix.py")
  system = systems.create(config)
  mesh = parallel.make_mesh()
  abstract = jax.eval_shape(system.init, jax.random.key(0))
  sharding = jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
  state = experiment.initial_state(system, sharding, jax.random.key(0))
  features = jax.jit(_stand_in_features)
  evaluator = evaluator_lib.Evaluator(system, mesh, sharding,
                                   fid=fid.FIDAccumulator(features))
  # 13 images in batches of 8: the second batch is padded (mask False).
  batches = data.create_eval_batches("sample", image_size=32, batch_size=8,
                                     num_images=13)
  means, _ = evaluator.evaluate(state, batches)

  images = _eval_images(13, 32)
  assert len(images) == 13 and means["num_images"] == 13
  truth = images / 255.0
  lab, gray = _gray_baseline(images)
  psnr = [min(skmetrics.peak_signal_noise_ratio(t, g, data_range=1), 100.0)
          for t, g in zip(truth, gray)]
  ssim = [skmetrics.structural_similarity(
      g, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
      data_range=1, channel_axis=-1) for t, g in zip(truth, gray)]
  np.testing.assert_allclose(means["gray_psnr"], np.mean(psnr), atol=0.02)
  np.testing.assert_allclose(means["gray_ssim"], np.mean(ssim), atol=2e-3)
  ab_distance = np.linalg.norm(lab[..., 1:], axis=-1)
  thresholds = np.arange(151.0)
  auc = [np.trapezoid([(d <= t).mean() for t in thresholds], thresholds) / 150
         for d in ab_distance]
  np.testing.assert_allclose(means["gray_raw_accuracy_auc"], np.mean(auc),
                             atol=1e-3)
  np.testing.assert_allclose(means["gray_ab_mse"],
                             np.mean(np.square(lab[..., 1:])), rtol=1e-3)

  def colorfulness(rgb):
    rgb = np.round(rgb * 255)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return (np.hypot(rg.std(axis=(1, 2)), yb.std(axis=(1, 2)))
            + 0.3 * np.hypot(rg.mean(axis=(1, 2)), yb.mean(axis=(1, 2))))

  np.testing.assert_allclose(means["truth_colorfulness"],
                             colorfulness(truth).mean(), rtol=1e-5)
  np.testing.assert_allclose(means["gray_colorfulness"],
                             colorfulness(gray).mean(), atol=0.05)
  np.testing.assert_allclose(
      means["gray_colorfulness_difference"],
      means["gray_colorfulness"] - means["truth_colorfulness"], atol=1e-4)

  # FID of the gray baseline: features of only the 13 real images.
  def moments(rgb):
    f = np.asarray(_stand_in_features(jnp.asarray(rgb, jnp.float32)), np.float64)
    return f.mean(0), np.cov(f, rowvar=False)

  expected_fid = fid.frechet_distance(*moments(gray), *moments(truth))
  assert expected_fid > 1e-3
  np.testing.assert_allclose(means["gray_fid"], expected_fid, rtol=2e-2)
  assert means["fid_num_images"] == 13
  assert means["fid"] == means["generator_fid"] >= 0
  for key in ("psnr", "ssim", "pixel_accuracy", "raw_accuracy_auc", "ab_mse",
              "ab_mae", "colorfulness", "colorfulness_difference", "fid"):
    assert f"gray_{key}" in means and key in means, key


def test_checkpoint_selection_and_its_config_field():
  assert checkpoints.select_steps("latest", [3, 6, 9]) == [9]
  assert checkpoints.select_steps("all", [9, 3, 6]) == [3, 6, 9]
  assert checkpoints.select_steps("6, 3", [3, 6, 9]) == [6, 3]
  with pytest.raises(checkpoints.NoCheckpointError, match="3, 6, 9"):
    checkpoints.select_steps("4", [3, 6, 9])
  with pytest.raises(checkpoints.NoCheckpointError):
    checkpoints.select_steps("latest", [])
  config = helpers.load_config("configs/pix2pix.py")
  config.evaluation.checkpoints = "best"
  with pytest.raises(configuration.ConfigError, match="evaluation.checkpoints"):
    configuration.validate(config, device_count=8)
  config = helpers.load_config("configs/pix2pix.py")
  config.evaluation.auc_max_distance = 150.5
  with pytest.raises(configuration.ConfigError, match="auc_max_distance"):
    configuration.validate(config, device_count=8)


def test_evaluation_run_writes_json_report_and_scalars(tmp_path):
  config = helpers.load_config("configs/pix2pix.py")
  run = tmp_path / "run"
  helpers.make_checkpoint(config, run, steps=(3, 6))
  config.evaluation.checkpoints = "all"
  config.evaluation.num_report_images = 3
  config.num_eval_images = 8
  results = checkpoints.evaluate_checkpoints(config, str(run))
  assert sorted(results) == [3, 6]
  for step in (3, 6):
    written = json.loads((run / "eval" / f"{step}.json").read_text())
    assert written["step"] == step and written["dataset"] == "sample"
    assert written["num_images"] == 8
    assert "psnr" in written and "gray_psnr" in written
    assert "raw_accuracy_auc" in written and "colorfulness" in written
    # No weights, no FID: the reason instead of a number.
    assert "fid" not in written and "pytorch-fid" in written["fid_skipped"]
    page = (run / "eval" / str(step) / "index.html").read_text()
    assert "gray baseline" in page and "Raw accuracy AuC" in page
    for i in range(3):
      for column in ("gray", "prediction", "truth"):
        name = f"images/{i:03d}_{column}.png"
        assert f'src="{name}"' in page
        assert (run / "eval" / str(step) / name).is_file()
    assert "images/003_gray.png" not in page
  assert list((run / "eval").glob("events.out.tfevents.*"))
  # Nothing was trained or saved.
  assert sorted(p.name for p in (run / "checkpoints").iterdir()
                if p.name.isdigit()) == ["3", "6"]


def _made_up_fid_weights(path) -> None:
  """Random FID Inception weights as an .npz export. An export records the
  sha256 of the .pth it came from; this one claims pytorch-fid's, so that
  the evaluation run accepts it."""
  rng = np.random.default_rng(0)
  arrays = {}
  for collection in ("params", "batch_stats"):
    for path_, leaf in fid._flatten(fid.template()[collection]).items():
      shape = leaf.shape
      if len(shape) == 4:  # HWIO -> OIHW, He-scaled to keep signals alive.
        value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:3])), shape)
        value = value.transpose(3, 2, 0, 1)
      elif path_[-1] == "var" or path_[-1] == "scale":
        value = rng.uniform(0.5, 1.5, shape)
      else:
        value = rng.uniform(-0.1, 0.1, shape)
      arrays[fid.torch_name(collection, path_)] = value.astype(np.float32)
  np.savez(path, **arrays, __source_sha256__=np.array(fid.WEIGHTS_SHA256))


@pytest.mark.slow  # Minutes on 2 cores: `pytest -m slow tests`.
def test_main_evaluate_mode_on_a_folder_with_fid(tmp_path):
  config = helpers.load_config("configs/pix2pix.py")
  run = tmp_path / "run"
  helpers.make_checkpoint(config, run, steps=(3, 6))
  photos = sorted((helpers.REPO / "jaxcolor" / "sample_data" / "eval").glob("*.jpg"))
  for split, files in (("train", photos[:2]), ("eval", photos[2:7])):
    (tmp_path / "photos" / split).mkdir(parents=True)
    for file in files:
      shutil.copy(file, tmp_path / "photos" / split / file.name)
  weights = tmp_path / "fid_inception.npz"
  _made_up_fid_weights(weights)
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.main", "--config",
       str(helpers.REPO / "configs/pix2pix.py") + ":smoke", "--workdir",
       str(run), "--mode=evaluate", "--config.evaluation.checkpoints=3",
       f"--config.eval_dataset=folder:{tmp_path / 'photos'}",
       "--config.num_eval_images=0", "--config.eval_batch_size=5",
       "--config.evaluation.num_report_images=2",
       f"--config.evaluation.fid_weights={weights}"],
      capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads((run / "eval" / "3.json").read_text())
  assert written["dataset"] == f"folder:{tmp_path / 'photos'}"
  assert written["num_images"] == written["fid_num_images"] == 5
  assert np.isfinite(written["fid"]) and written["fid"] >= 0
  assert np.isfinite(written["gray_fid"]) and written["gray_fid"] >= 0
  assert "fid_skipped" not in written
  assert not (run / "eval" / "6.json").exists()
  page = (run / "eval" / "3" / "index.html").read_text()
  assert "FID" in page
  # A step that was not saved: an error naming the saved ones, before
  # anything compiles (main prints it as one line).
  config.evaluation.checkpoints = "4"
  with pytest.raises(checkpoints.NoCheckpointError, match="saved steps: 3, 6"):
    checkpoints.evaluate_checkpoints(config, str(run))
  with pytest.raises(checkpoints.NoCheckpointError, match="No checkpoints"):
    checkpoints.evaluate_checkpoints(config, str(tmp_path / "empty"))


class _TinyFeatures(nn.Module):
  """A stand-in for Inception: one convolution, pooled to 4 features."""

  @nn.compact
  def __call__(self, rgb, train: bool = False):
    del train
    return nn.Conv(4, (3, 3))(rgb).mean(axis=(1, 2))


def test_fid_network_compiles_with_the_run_compiler_options(tmp_path,
                                                             monkeypatch):
  # Inception's forward pass takes the same XLA:CPU options as the run's
  # networks (on the CPU: XLA's own convolution kernels). First, the
  # evaluation hands `InceptionFeatures` the run's options ...
  config = helpers.load_config("configs/pix2pix.py")
  weights = tmp_path / "fid_inception.npz"
  _made_up_fid_weights(weights)
  config.evaluation.fid_weights = str(weights)
  made = {}
  real_features = fid.InceptionFeatures

  def features(variables, mesh, model=None, compiler_options=None):
    made["options"] = compiler_options
    return object()

  monkeypatch.setattr(checkpoints.fid_lib, "InceptionFeatures", features)
  for library in ("eigen", "ynnpack"):
    config.cpu_conv_library = library
    checkpoints._fid_accumulator(config, mesh=None)
    assert made["options"] == backends.compiler_options(
        config, jax.default_backend())
  if jax.default_backend() == "cpu":
    assert made["options"] is None  # 'ynnpack': XLA's defaults.
    config.cpu_conv_library = "eigen"
    checkpoints._fid_accumulator(config, mesh=None)
    assert made["options"] is not None

  # ... and `InceptionFeatures` compiles its program with them (a stand-in
  # network: Inception's own compile takes a minute). XLA refuses an option
  # it does not know when it compiles, so an unknown one shows that the
  # options reach the compiler; the run's are accepted and compute the same
  # features as XLA's defaults.
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = _TinyFeatures()
  rgb = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)),
                    jnp.float32)
  variables = model.init(jax.random.key(0), rgb)
  with pytest.raises(Exception, match="xla_no_such_option"):
    real_features(variables, mesh, model=model,
                  compiler_options={"xla_no_such_option": "1"})(rgb)
  default = real_features(variables, mesh, model=model)(rgb)
  run_options = backends.compiler_options(config, jax.default_backend())
  with_run_options = real_features(variables, mesh, model=model,
                                   compiler_options=run_options)(rgb)
  assert with_run_options.shape == (2, 4)
  np.testing.assert_allclose(with_run_options, default, rtol=1e-4, atol=1e-6)
