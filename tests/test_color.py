"""jaxcolor.core.color_space against scikit-image, the reference the papers convert with."""

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor

from jaxcolor.core import color_space

_REPO = Path(__file__).resolve().parents[1]
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _photo_files(count: int) -> list[Path]:
  """A few real photographs: the embedded sample, else ../shared beside the clone."""
  for root in (_REPO / "jaxcolor" / "sample_data",
               _REPO.parent / "shared" / "data" / "photos256"):
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if files:
      return files[:count]
  pytest.skip("no sample photographs found")


def _load_rgb_uint8(path: Path, size: int = 64) -> np.ndarray:
  return np.asarray(Image.open(path).convert("RGB"))[:size, :size]


def _random_colors(n: int, seed: int = 0) -> np.ndarray:
  extremes = np.array([
      [0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1],
      [1, 1, 0], [0, 1, 1], [1, 0, 1], [0.5, 0.5, 0.5],
      # Either side of the sRGB and Lab curve thresholds.
      [0.04, 0.04, 0.04], [0.041, 0.041, 0.041], [0.08, 0.08, 0.08],
      [0.1, 0.1, 0.1], [1 / 255, 0, 0],
  ])
  rng = np.random.default_rng(seed)
  return np.concatenate([extremes, rng.uniform(size=(n, 3))])


def _random_lab(n: int, seed: int = 0) -> np.ndarray:
  """Lab triples over the networks' whole output range, many outside the sRGB gamut."""
  rng = np.random.default_rng(seed)
  return np.stack([rng.uniform(0, 100, n), rng.uniform(-110, 110, n),
                   rng.uniform(-110, 110, n)], axis=-1)


def _skimage_lab2rgb(lab: np.ndarray) -> np.ndarray:
  with warnings.catch_warnings():
    # skimage warns about the negative Z values it clips; so do we, silently.
    warnings.simplefilter("ignore", UserWarning)
    return skcolor.lab2rgb(lab)


def test_rgb_to_lab_matches_skimage_on_random_and_extreme_colors():
  rgb = _random_colors(4000)
  lab = color_space.rgb_to_lab(rgb)
  np.testing.assert_allclose(lab, skcolor.rgb2lab(rgb), atol=0.01, rtol=0)


def test_rgb_to_lab_of_black_and_white():
  lab = color_space.rgb_to_lab(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
  np.testing.assert_allclose(lab, [[0, 0, 0], [100, 0, 0]], atol=0.01)


def test_lab_to_rgb_matches_skimage_including_out_of_gamut():
  lab = _random_lab(4000)
  np.testing.assert_allclose(color_space.lab_to_rgb(lab), _skimage_lab2rgb(lab), atol=1e-4, rtol=0)


def test_lab_to_rgb_clips_like_skimage_where_z_goes_negative():
  # b* large enough that f(Z) = f(Y) - b/200 < 0: skimage sets it to 0.
  lab = np.array([[10.0, 0.0, 100.0], [50.0, -80.0, 110.0], [0.0, 100.0, -110.0]])
  rgb = color_space.lab_to_rgb(lab)
  np.testing.assert_allclose(rgb, _skimage_lab2rgb(lab), atol=1e-4, rtol=0)
  assert np.all((np.asarray(rgb) >= 0) & (np.asarray(rgb) <= 1))


def test_matches_skimage_on_photographs():
  rgb = np.stack([_load_rgb_uint8(p) for p in _photo_files(3)])
  reference = skcolor.rgb2lab(rgb)
  np.testing.assert_allclose(color_space.rgb_to_lab(rgb), reference, atol=0.01, rtol=0)
  np.testing.assert_allclose(color_space.lab_to_rgb(reference), _skimage_lab2rgb(reference),
                             atol=1e-4, rtol=0)


def test_round_trip_rgb_lab_rgb():
  rgb = _random_colors(4000, seed=1)
  np.testing.assert_allclose(color_space.lab_to_rgb(color_space.rgb_to_lab(rgb)), rgb, atol=1e-3, rtol=0)


@pytest.mark.parametrize("shape", [(3,), (5, 7, 3), (2, 5, 7, 3)])
def test_leading_shapes(shape):
  rgb = np.random.default_rng(2).uniform(size=shape)
  lab = color_space.rgb_to_lab(rgb)
  assert lab.shape == shape
  assert lab.dtype == jnp.float32
  np.testing.assert_allclose(lab, skcolor.rgb2lab(rgb.reshape(-1, 3)).reshape(shape), atol=0.01)
  back = color_space.lab_to_rgb(lab)
  assert back.shape == shape
  assert back.dtype == jnp.float32


def test_rejects_wrong_channel_count_and_integer_types_other_than_uint8():
  with pytest.raises(ValueError, match="3 channels"):
    color_space.rgb_to_lab(np.zeros((4, 4, 2), np.float32))
  with pytest.raises(ValueError, match="3 channels"):
    color_space.lab_to_rgb(np.zeros((4, 4, 4), np.float32))
  with pytest.raises(TypeError, match="uint8"):
    color_space.rgb_to_lab(np.zeros((4, 4, 3), np.int32))


def test_composes_under_jit_and_vmap():
  rgb = jnp.asarray(_random_colors(200, seed=3), jnp.float32)
  np.testing.assert_allclose(jax.jit(jax.vmap(color_space.rgb_to_lab))(rgb), color_space.rgb_to_lab(rgb),
                             atol=1e-4)
  lab = jnp.asarray(_random_lab(200, seed=3), jnp.float32)
  np.testing.assert_allclose(jax.jit(jax.vmap(color_space.lab_to_rgb))(lab), color_space.lab_to_rgb(lab),
                             atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_float32_output_for_any_float_input(dtype):
  rgb = jnp.asarray(_random_colors(10), dtype)
  assert color_space.rgb_to_lab(rgb).dtype == jnp.float32
  assert color_space.lab_to_rgb(jnp.asarray(_random_lab(10), dtype)).dtype == jnp.float32


def test_uint8_input_is_divided_by_255():
  rgb = np.random.default_rng(4).integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
  np.testing.assert_allclose(color_space.rgb_to_lab(rgb), color_space.rgb_to_lab(rgb / 255.0), atol=1e-4)
  np.testing.assert_allclose(color_space.rgb_to_lab(rgb), skcolor.rgb2lab(rgb), atol=0.01)


def test_gradients_are_finite_at_the_curve_branches():
  # Black, white and values on both sides of each threshold: a NaN here would
  # come from the discarded branch of a jnp.where.
  rgb = jnp.asarray(_random_colors(50, seed=5), jnp.float32)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(color_space.rgb_to_lab(x))))(rgb)
  assert np.all(np.isfinite(grad))
  lab = jnp.asarray(_random_lab(200, seed=5), jnp.float32)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(color_space.lab_to_rgb(x))))(lab)
  assert np.all(np.isfinite(grad))


def test_scaling_helpers_invert_each_other_and_hit_the_ranges():
  lightness = np.linspace(0, 100, 11, dtype=np.float32)
  ab = np.linspace(-110, 110, 11, dtype=np.float32)
  np.testing.assert_allclose(color_space.lightness_to_net(lightness)[[0, -1]], [-1, 1])
  np.testing.assert_allclose(color_space.ab_to_net(ab)[[0, -1]], [-1, 1])
  np.testing.assert_allclose(color_space.net_to_lightness(color_space.lightness_to_net(lightness)), lightness,
                             atol=1e-5)
  np.testing.assert_allclose(color_space.net_to_ab(color_space.ab_to_net(ab)), ab, atol=1e-5)


def test_split_lab_matches_the_reference_scaling_of_skimage_lab():
  rgb = np.random.default_rng(6).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
  lightness, ab = jax.jit(color_space.split_lab)(rgb)
  assert lightness.shape == (2, 8, 8, 1) and ab.shape == (2, 8, 8, 2)
  assert lightness.dtype == jnp.float32 and ab.dtype == jnp.float32
  # pix2pix colorization_dataset.py: A = L / 50 - 1, B = ab / 110.
  reference = skcolor.rgb2lab(rgb)
  np.testing.assert_allclose(lightness, reference[..., :1] / 50 - 1, atol=1e-4)
  np.testing.assert_allclose(ab, reference[..., 1:] / 110, atol=1e-4)


def test_lab_net_to_rgb_inverts_split_lab():
  rgb = np.random.default_rng(7).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
  lightness, ab = color_space.split_lab(rgb)
  restored = jax.jit(color_space.lab_net_to_rgb)(lightness, ab)
  assert restored.shape == rgb.shape and restored.dtype == jnp.float32
  np.testing.assert_allclose(restored, rgb / 255.0, atol=1e-3)


def test_with_ab_is_lab_to_rgb_of_the_inputs_lightness_and_new_ab():
  # The colorize path's one-program recombination against the two public
  # conversions it replaces, on random and extreme colors with a*b* over
  # the networks' whole range (many out of gamut, clipped).
  rgb = np.round(_random_colors(4000) * 255).astype(np.uint8)
  ab = _random_lab(len(rgb), seed=3)[:, 1:].astype(np.float32)
  lab = np.concatenate([np.asarray(color_space.rgb_to_lab(rgb))[:, :1], ab], -1)
  expected = np.round(np.asarray(color_space.lab_to_rgb(lab)) * 255).astype(np.uint8)
  got = np.asarray(color_space.with_ab(rgb, ab))
  assert got.dtype == np.uint8 and got.shape == rgb.shape
  # Rounding may land on the other side of .5 where the two programs sum
  # in another order; a whole level at most, and seldom.
  assert np.abs(got.astype(int) - expected).max() <= 1
  assert (got != expected).mean() < 1e-3
