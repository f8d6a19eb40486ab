"""Colour as a distribution over a*b* bins (jaxcolor/core/ab_bins.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcolor.core import ab_bins
from jaxcolor.core import color_space
from jaxcolor.models import unet


def test_bins_cover_the_srgb_gamut_and_only_it():
  centers = ab_bins.bin_centers()
  assert centers.shape == (ab_bins.num_bins(), 2)
  assert len(np.unique(centers, axis=0)) == len(centers)
  # Every sRGB colour lies in its nearest bin's square (half a grid away).
  rgb = np.random.default_rng(0).random((5000, 3)).astype(np.float32)
  ab = np.asarray(color_space.rgb_to_lab(jnp.asarray(rgb)))[:, 1:]
  nearest = centers[np.asarray(ab_bins.nearest_bin(jnp.asarray(ab)))]
  assert np.abs(nearest - ab).max() <= ab_bins.GRID / 2 + 1e-3
  # ... and a grid point far outside the gamut is not a bin.
  assert not ((centers[:, 0] == -110) & (centers[:, 1] == 110)).any()
  # The span the paper's 313 bins have.
  np.testing.assert_array_equal(centers.min(0), [-90, -110])
  np.testing.assert_array_equal(centers.max(0), [100, 90])


def test_soft_encoding_weights_the_nearest_bins_by_distance():
  ab = jnp.array([[3.0, 4.0], [52.0, -18.0], [-40.0, 60.0]])
  targets = np.asarray(ab_bins.soft_encode(ab))
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
  assert ((targets > 0).sum(-1) == ab_bins.NEIGHBOURS).all()
  np.testing.assert_array_equal(targets.argmax(-1),
                                np.asarray(ab_bins.nearest_bin(ab)))
  # The weights fall with distance: the second pixel is nearer (50, -20)
  # than (60, -20).
  centers = ab_bins.bin_centers()
  index = {tuple(c): i for i, c in enumerate(centers)}
  assert targets[1, index[(50.0, -20.0)]] > targets[1, index[(60.0, -20.0)]]


def test_rebalancing_favours_rare_bins_with_unit_expected_weight():
  counts = np.ones(ab_bins.num_bins())
  gray = np.asarray(ab_bins.nearest_bin(jnp.zeros(2)))
  counts[gray] = 1e6  # Most pixels are near gray, as in photos.
  weights = ab_bins.rebalance_weights(counts)
  assert weights[gray] < 0.5 * np.median(weights)
  # E_smoothed-prior[w] = 1 (eq. 4): recompute the smoothed prior.
  centers = ab_bins.bin_centers().astype(np.float64)
  d2 = ((centers[:, None] - centers[None]) ** 2).sum(-1)
  smoothed = np.exp(-d2 / (2 * ab_bins.PRIOR_SIGMA ** 2)) @ (counts / counts.sum())
  smoothed /= smoothed.sum()
  np.testing.assert_allclose((smoothed * weights).sum(), 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="non-negative"):
    ab_bins.rebalance_weights(np.zeros(ab_bins.num_bins()))
  with pytest.raises(ValueError, match="got shape"):
    ab_bins.rebalance_weights(np.ones(3))


def test_annealed_mean_goes_from_the_mean_to_the_mode():
  centers = ab_bins.bin_centers()
  logits = jnp.asarray(np.random.default_rng(1).normal(0, 2, (4, len(centers))),
                       jnp.float32)
  p = np.asarray(jax.nn.softmax(logits))
  np.testing.assert_allclose(ab_bins.annealed_mean(logits, 1.0), p @ centers,
                             rtol=1e-4, atol=1e-3)
  mode = centers[np.asarray(logits).argmax(-1)]
  np.testing.assert_allclose(ab_bins.annealed_mean(logits, 1e-3), mode,
                             atol=1e-2)


def test_cross_entropy_is_least_at_the_soft_targets():
  ab = jnp.asarray(np.random.default_rng(2).uniform(-50, 50, (1, 2, 2, 2)),
                   jnp.float32)
  weights = jnp.ones(ab_bins.num_bins())
  at_target = jnp.log(ab_bins.soft_encode(ab) + 1e-12)
  grad = jax.grad(ab_bins.rebalanced_cross_entropy)(at_target, ab, weights)
  assert float(jnp.abs(grad).max()) < 1e-6
  elsewhere = jnp.zeros_like(at_target)
  assert (ab_bins.rebalanced_cross_entropy(elsewhere, ab, weights)
          > ab_bins.rebalanced_cross_entropy(at_target, ab, weights) + 1.0)
  # The weight of a pixel is that of its nearest bin.
  double = weights.at[ab_bins.nearest_bin(ab[0, 0, 0])].set(2.0)
  assert (ab_bins.rebalanced_cross_entropy(elsewhere, ab, double)
          > ab_bins.rebalanced_cross_entropy(elsewhere, ab, weights))


def test_unet_with_bins_scores_bins_at_a_quarter_and_decodes_to_full_size():
  net = unet.UNetGenerator(num_downsamplings=4, ngf=4, ab_bins=True,
                           bins_level=2, bins_temperature=0.5)
  x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 1)),
                  jnp.float32)
  variables = net.init(jax.random.key(0), x, train=False)
  assert "bins_head" in variables["params"]
  assert "up_0" not in variables["params"] and "up_1" not in variables["params"]
  ab, logits = net.apply(variables, x, train=False)
  assert ab.shape == (2, 32, 32, 2) and logits.shape == (2, 8, 8, ab_bins.num_bins())
  assert logits.dtype == jnp.float32
  expected = ab_bins.decode_to_net(logits, 0.5, (32, 32))
  np.testing.assert_allclose(ab, expected, atol=1e-6)
  assert float(jnp.abs(ab).max()) <= 1.0
  with pytest.raises(ValueError, match="bins_level=4 is invalid"):
    unet.UNetGenerator(num_downsamplings=4, ngf=4, ab_bins=True,
                       bins_level=4).init(jax.random.key(0), x, train=False)
