"""jaxcolor.evaluation.color_metrics against scikit-image and constructed cases."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import metrics as skmetrics

from jaxcolor.evaluation import color_metrics

_REPO = Path(__file__).resolve().parents[1]
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _photos(count: int = 2, size: int = 48) -> np.ndarray:
  """[count, size, size, 3] float64 in [0, 1]: the embedded sample, else ../shared."""
  for root in (_REPO / "jaxcolor" / "sample_data",
               _REPO.parent / "shared" / "data" / "photos256"):
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if files:
      return np.stack([np.asarray(Image.open(p).convert("RGB"))[:size, :size]
                       for p in files[:count]]) / 255.0
  pytest.skip("no sample photographs found")


def _prediction_of(true_rgb: np.ndarray, seed: int = 0) -> np.ndarray:
  """A plausible imperfect colorization: a color cast plus noise, not quantised."""
  rng = np.random.default_rng(seed)
  cast = np.array([0.04, -0.03, 0.06])
  return np.clip(true_rgb + cast + rng.normal(0, 0.03, true_rgb.shape), 0, 1)


def _quantized(rgb: np.ndarray) -> np.ndarray:
  return np.round(rgb * 255) / 255


def test_psnr_matches_skimage_on_8bit_quantised_images():
  true_rgb = _photos()
  pred_rgb = _prediction_of(true_rgb)
  value = color_metrics.psnr(pred_rgb, true_rgb)
  assert value.shape == (len(true_rgb),) and value.dtype == jnp.float32
  expected = [skmetrics.peak_signal_noise_ratio(t, _quantized(p), data_range=1)
              for t, p in zip(true_rgb, pred_rgb)]
  np.testing.assert_allclose(value, expected, atol=1e-3, rtol=0)


def test_ssim_matches_skimage_gaussian_ssim():
  true_rgb = _photos()
  pred_rgb = _prediction_of(true_rgb, seed=1)
  value = color_metrics.ssim(pred_rgb, true_rgb)
  assert value.shape == (len(true_rgb),) and value.dtype == jnp.float32
  expected = [skmetrics.structural_similarity(
      _quantized(p), t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
      data_range=1, channel_axis=-1) for t, p in zip(true_rgb, pred_rgb)]
  np.testing.assert_allclose(value, expected, atol=1e-4, rtol=0)


def test_identical_images_give_inf_psnr_and_unit_ssim():
  true_rgb = _photos()
  # Sub-quantum differences vanish once both are quantised to 8 bits.
  nearly = true_rgb + 0.3 / 255
  assert np.all(np.isinf(color_metrics.psnr(nearly, true_rgb)))
  np.testing.assert_allclose(color_metrics.ssim(nearly, true_rgb), 1.0, atol=1e-6)


def test_quantize_8bit_clips_and_rounds():
  np.testing.assert_allclose(color_metrics.quantize_8bit(np.array([-0.2, 0.0, 0.5, 1.0, 1.3])),
                             [0, 0, 128 / 255, 1, 1], atol=1e-7)


def test_pixel_accuracy_on_a_constructed_fraction():
  true_lab = np.zeros((2, 4, 5, 3), np.float32)
  true_lab[..., 0] = 50.0
  pred_lab = true_lab.copy()
  # Image 0: of 20 pixels, 6 exceed a tolerance; the rest sit at or within it.
  pred_lab[0, 0, 0, 0] += 3.0      # |dL| = 3 > 2
  pred_lab[0, 0, 1, 1] += 5.0      # |da| = 5 > 4.4
  pred_lab[0, 0, 2, 2] -= 5.0      # |db| = 5 > 4.4
  pred_lab[0, 0, 3, 0] += 2.6      # rounds to 3 > 2
  pred_lab[0, 0, 4, 1] -= 4.6      # rounds to 5 > 4.4
  pred_lab[0, 1, 0] += [3.0, 5.0, 5.0]
  pred_lab[0, 2, 0, 0] += 2.0      # at the tolerance: correct
  pred_lab[0, 2, 1, 1] += 4.4      # rounds to 4: correct
  pred_lab[0, 2, 2, 0] += 2.4      # rounds to 2: correct
  pred_lab[0, 2, 3] += [1.0, -4.0, 4.0]  # all within: correct
  # Image 1: every pixel off in b* only.
  pred_lab[1, ..., 2] += 6.0
  accuracy = jax.jit(color_metrics.pixel_accuracy)(pred_lab, true_lab)
  assert accuracy.shape == (2,) and accuracy.dtype == jnp.float32
  np.testing.assert_allclose(accuracy, [14 / 20, 0.0])


def test_pixel_accuracy_tolerances_are_arguments():
  true_lab = np.zeros((1, 2, 2, 3), np.float32)
  pred_lab = true_lab + np.array([3.0, 0.0, 0.0], np.float32)
  assert color_metrics.pixel_accuracy(pred_lab, true_lab)[0] == 0.0
  assert color_metrics.pixel_accuracy(pred_lab, true_lab, l_tol=3.0)[0] == 1.0


def test_ab_errors_per_image():
  true_ab = np.zeros((3, 2, 2, 2), np.float32)
  pred_ab = true_ab.copy()
  pred_ab[0] = 2.0
  pred_ab[1, 0, 0, 1] = -4.0
  np.testing.assert_allclose(color_metrics.ab_mse(pred_ab, true_ab), [4.0, 16.0 / 8, 0.0])
  np.testing.assert_allclose(color_metrics.ab_mae(pred_ab, true_ab), [2.0, 4.0 / 8, 0.0])
  assert color_metrics.ab_mse(jnp.asarray(pred_ab, jnp.bfloat16), true_ab).dtype == jnp.float32


def test_metrics_compose_under_an_outer_jit():
  true_rgb = _photos()
  pred_rgb = _prediction_of(true_rgb, seed=2)

  @jax.jit
  def evaluate(pred, true):
    return color_metrics.psnr(pred, true), color_metrics.ssim(pred, true)

  psnr_value, ssim_value = evaluate(pred_rgb, true_rgb)
  np.testing.assert_allclose(psnr_value, color_metrics.psnr(pred_rgb, true_rgb), rtol=1e-5)
  np.testing.assert_allclose(ssim_value, color_metrics.ssim(pred_rgb, true_rgb), atol=1e-5)


def _auc_reference(pred_ab, true_ab, max_distance=150.0, step=1.0):
  """Zhang et al.'s AuC by the definition: the curve at every threshold,
  integrated with numpy's trapezoid rule, divided by the range."""
  distance = np.linalg.norm(np.asarray(pred_ab, np.float64) - true_ab, axis=-1)
  thresholds = np.arange(0.0, max_distance + step / 2, step)
  curves = [[(d <= t).mean() for t in thresholds] for d in distance]
  return [np.trapezoid(c, thresholds) / max_distance for c in curves]


def test_raw_accuracy_auc_matches_the_threshold_sweep():
  rng = np.random.default_rng(0)
  true_ab = rng.normal(0, 30, (3, 12, 10, 2)).astype(np.float32)
  pred_ab = true_ab + rng.normal(0, 25, true_ab.shape).astype(np.float32)
  pred_ab[1] = true_ab[1]                        # Perfect: 1.
  pred_ab[2, :6] = true_ab[2, :6] + 200.0        # Half beyond every threshold.
  value = color_metrics.raw_accuracy_auc(pred_ab, true_ab)
  assert value.shape == (3,) and value.dtype == jnp.float32
  np.testing.assert_allclose(value, _auc_reference(pred_ab, true_ab), atol=1e-5)
  assert value[1] == 1.0
  coarse = color_metrics.raw_accuracy_auc(pred_ab, true_ab, max_distance=100.0, step=5.0)
  np.testing.assert_allclose(
      coarse, _auc_reference(pred_ab, true_ab, 100.0, 5.0), atol=1e-5)


def test_raw_accuracy_auc_of_a_constant_distance():
  # Every pixel at distance 30 of the truth: the curve is 0 below 30 and 1
  # from 30 on, so the area is (150 - 30 + 0.5) / 150 (the trapezoid at 30).
  true_ab = np.zeros((1, 4, 4, 2), np.float32)
  pred_ab = true_ab + np.array([18.0, 24.0], np.float32)
  np.testing.assert_allclose(color_metrics.raw_accuracy_auc(pred_ab, true_ab),
                             [(120 + 0.5) / 150], atol=1e-6)


def _colorfulness_reference(rgb):
  """Hasler and Suesstrunk 2003, eq. (3), in float64 on 0..255."""
  rgb = np.round(np.clip(rgb, 0, 1) * 255).astype(np.float64)
  rg = rgb[..., 0] - rgb[..., 1]
  yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
  return [np.hypot(a.std(), b.std()) + 0.3 * np.hypot(a.mean(), b.mean())
          for a, b in zip(rg, yb)]


def test_colorfulness_matches_the_formula_and_is_zero_for_gray():
  photos = _photos(count=3)
  value = color_metrics.colorfulness(photos)
  assert value.shape == (3,) and value.dtype == jnp.float32
  np.testing.assert_allclose(value, _colorfulness_reference(photos), rtol=1e-5)
  gray = np.repeat(photos.mean(-1, keepdims=True), 3, axis=-1)
  np.testing.assert_allclose(color_metrics.colorfulness(gray), 0.0, atol=1e-6)
  # A uniform pure red image: no spread; mean rg = 255, yb = 127.5.
  red = np.zeros((1, 8, 8, 3))
  red[..., 0] = 1.0
  np.testing.assert_allclose(color_metrics.colorfulness(red),
                             [0.3 * np.hypot(255.0, 127.5)], rtol=1e-6)
