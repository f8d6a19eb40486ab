"""a*b* upsampled along the photo's own L* (jaxcolor/inference/guided_upsampling.py)."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcolor.core import color_space
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.inference import guided_upsampling
from jaxcolor.inference import rendering


def step_photo(height=48, width=64, edge=29):
  """A photo whose left part is dark red and right part light blue: one
  vertical edge of L* and a*b* at column `edge` (not on the network's grid)."""
  rgb = np.zeros((height, width, 3), np.uint8)
  rgb[:, :edge] = (150, 30, 30)
  rgb[:, edge:] = (120, 170, 230)
  return Image.fromarray(rgb)


def true_ab(image):
  return np.asarray(color_space.rgb_to_lab(jnp.asarray(np.asarray(image))))[..., 1:]


def test_guided_upsampling_keeps_the_edge_that_bilinear_blurs():
  image = step_photo()
  small = image.resize((16, 12), Image.Resampling.BILINEAR)
  ab = true_ab(small)  # What a perfect network at 1/4 size would give.
  truth = true_ab(image)
  errors = {}
  for mode in guided_upsampling.MODES:
    rgb = rendering.recombine(image, ab, mode)
    errors[mode] = np.abs(true_ab(Image.fromarray(rgb)) - truth).mean()
  assert errors["guided"] < 0.5 * errors["bilinear"], errors
  # L* is the photo's own either way (up to uint8 rounding).
  out = np.asarray(color_space.rgb_to_lab(jnp.asarray(
      rendering.recombine(image, ab, "guided"))))[..., 0]
  np.testing.assert_allclose(out, rendering.lightness_of(image), atol=0.6)


def test_on_flat_lightness_it_interpolates_within_the_samples():
  rng = np.random.default_rng(0)
  ab = rng.uniform(-40, 40, (6, 8, 2)).astype(np.float32)
  flat = np.full((24, 32), 55.0, np.float32)
  out = guided_upsampling.joint_bilateral(flat, ab)
  assert out.shape == (24, 32, 2)
  # A convex combination: within the samples' range, and smooth.
  assert (out.min((0, 1)) >= ab.min((0, 1)) - 1e-4).all()
  assert (out.max((0, 1)) <= ab.max((0, 1)) + 1e-4).all()
  constant = guided_upsampling.joint_bilateral(flat, np.full((6, 8, 2), 7.0,
                                                             np.float32))
  np.testing.assert_allclose(constant, 7.0, rtol=1e-5)
  # Its mean over the photo is that of the samples, up to the borders' weight.
  np.testing.assert_allclose(out.mean((0, 1)), ab.mean((0, 1)), atol=3.0)


def test_an_unknown_mode_is_refused():
  with pytest.raises(ValueError, match="upsample='nearest'"):
    rendering.recombine(step_photo(), np.zeros((4, 4, 2), np.float32),
                        "nearest")
  colorizer = colorizer_lib.Colorizer.__new__(colorizer_lib.Colorizer)
  with pytest.raises(colorizer_lib.ColorizerError, match="one of bilinear"):
    colorizer.with_upsample("nearest")
  assert colorizer.with_upsample("guided").upsample == "guided"
  assert colorizer.upsample == "bilinear"
