"""Colour as a distribution over quantised a*b* bins (Zhang et al. 2016).

"Colorful Image Colorization" (Zhang, Isola, Efros, ECCV 2016) treats
colorization as classification: the a*b* plane is cut into squares of side
10, and the network predicts, per pixel, a distribution over the squares
that hold an in-gamut colour. Its parts, each a function here:

  - `bin_centers`: the squares whose centre is the nearest grid point to
    some sRGB colour (every 8-bit level per channel at 1/127 steps, in Lab).
    This gives 262 bins, over a in [-90, 100] and b in [-110, 90], the range
    of the paper's 313; the paper's own gamut test (which it does not state)
    keeps more squares at the edge. The bins are computed here, not copied.
  - `soft_encode`: the target of a pixel is its 5 nearest bins, weighted by
    a Gaussian of the distance (sigma 5), not a one-hot (sec. 2.1).
  - `rebalance_weights`: class rebalancing. The empirical bin distribution
    of the training photos (`histogram`), smoothed by a Gaussian of sigma 5
    over the plane, is mixed with the uniform one (lambda 1/2); the weight
    of a bin is the mix's inverse, normalised so the expected weight under
    the smoothed prior is 1 (sec. 2.2, eq. 3-4). Without it the loss is
    dominated by the desaturated bins and the output is brown.
  - `annealed_mean`: decoding. The mean of the distribution is the L2
    answer (sepia), its mode is vivid and patchy; the mean of the
    distribution sharpened by a temperature T (softmax of logits / T)
    interpolates between them (sec. 2.3; the paper uses T = 0.38).

Everything takes and gives a*b* in Lab units, not the networks' scale.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcolor.core import color_space

GRID = 10.0            # The side of a bin in a*b* units.
NEIGHBOURS = 5         # Soft encoding: the nearest bins that share a target.
ENCODE_SIGMA = 5.0     # ... and the Gaussian width of their weights.
PRIOR_SIGMA = 5.0      # The smoothing of the empirical prior.
UNIFORM_MIX = 0.5      # lambda: the uniform share of the rebalancing mix.
PAPER_TEMPERATURE = 0.38


@functools.cache
def bin_centers() -> np.ndarray:
  """The in-gamut bin centres, float32 [Q, 2] (a, b), sorted by (a, b)."""
  levels = np.linspace(0.0, 1.0, 128, dtype=np.float32)
  rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1)
  with jax.ensure_compile_time_eval():  # A constant, even inside a trace.
    lab = np.asarray(color_space.rgb_to_lab(jnp.asarray(rgb.reshape(-1, 3))))
  cells = np.unique(np.round(lab[:, 1:] / GRID).astype(np.int32), axis=0)
  return (cells * GRID).astype(np.float32)


def num_bins() -> int:
  return len(bin_centers())


def nearest_bin(ab: jax.Array) -> jax.Array:
  """The index of the nearest bin centre of each a*b* [..., 2]: int32 [...]."""
  centers = jnp.asarray(bin_centers())
  d2 = jnp.sum((ab[..., None, :] - centers) ** 2, axis=-1)
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def soft_encode(ab: jax.Array) -> jax.Array:
  """Soft targets [..., Q] of a*b* [..., 2]: the NEIGHBOURS nearest bins,
  weighted exp(-d^2 / (2 sigma^2)) and summing to 1."""
  centers = jnp.asarray(bin_centers())
  d2 = jnp.sum((ab[..., None, :].astype(jnp.float32) - centers) ** 2, axis=-1)
  neg_d2, index = jax.lax.top_k(-d2, NEIGHBOURS)
  weights = jax.nn.softmax(neg_d2 / (2.0 * ENCODE_SIGMA ** 2), axis=-1)
  one_hot = jax.nn.one_hot(index, centers.shape[0], dtype=jnp.float32)
  return jnp.einsum("...k,...kq->...q", weights, one_hot)


def histogram(ab: np.ndarray) -> np.ndarray:
  """Counts [Q] (float64) of the nearest bins of a*b* [..., 2]."""
  index = np.asarray(jax.jit(nearest_bin)(jnp.asarray(ab, jnp.float32)))
  return np.bincount(index.reshape(-1), minlength=num_bins()).astype(np.float64)


def rebalance_weights(counts: np.ndarray) -> np.ndarray:
  """The class-rebalancing weights [Q] (float32) of bin `counts` [Q].

  Raises:
    ValueError: counts of another length, negative, or all zero.
  """
  counts = np.asarray(counts, np.float64)
  if counts.shape != (num_bins(),) or (counts < 0).any() or counts.sum() <= 0:
    raise ValueError(f"bin counts must be {num_bins()} non-negative numbers "
                     f"with a positive sum; got shape {counts.shape}.")
  prior = counts / counts.sum()
  centers = bin_centers().astype(np.float64)
  d2 = np.sum((centers[:, None] - centers[None]) ** 2, axis=-1)
  kernel = np.exp(-d2 / (2.0 * PRIOR_SIGMA ** 2))
  smoothed = kernel @ prior
  smoothed /= smoothed.sum()
  weights = 1.0 / ((1.0 - UNIFORM_MIX) * smoothed + UNIFORM_MIX / len(prior))
  weights /= np.sum(smoothed * weights)
  return weights.astype(np.float32)


def rebalanced_cross_entropy(logits: jax.Array, ab: jax.Array,
                             weights: jax.Array) -> jax.Array:
  """Zhang et al.'s eq. 2 with eq. 3, averaged over pixels.

  Args:
    logits: [B, h, w, Q] the network's bin scores.
    ab: [B, h, w, 2] the true a*b* (Lab units) at the logits' size.
    weights: [Q] `rebalance_weights`.
  """
  targets = soft_encode(ab)
  pixel_weight = weights[jnp.argmax(targets, axis=-1)]
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(pixel_weight * jnp.sum(targets * log_p, axis=-1))


def annealed_mean(logits: jax.Array, temperature: float) -> jax.Array:
  """The a*b* [..., 2] (Lab units) of bin scores [..., Q] at `temperature`:
  the mean of softmax(logits / T), T = 1 the plain mean, T -> 0 the mode."""
  p = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return p @ jnp.asarray(bin_centers())


def block_mean(ab: jax.Array, factor: int) -> jax.Array:
  """[B, H, W, C] averaged over factor x factor blocks: the truth at the
  size of the predicted distribution (Zhang et al. score it at 1/4)."""
  if factor == 1:
    return ab
  b, h, w, c = ab.shape
  return ab.reshape(b, h // factor, factor, w // factor, factor, c).mean(
      axis=(2, 4))


def decode_to_net(logits: jax.Array, temperature: float,
                  size: tuple[int, int]) -> jax.Array:
  """Bin scores [B, h, w, Q] -> network-scaled a*b* [B, H, W, 2] at `size`:
  the annealed mean, resized bilinearly (the colorizer may then upsample
  further, guided by L*: jaxcolor/inference/rendering.py)."""
  ab = annealed_mean(logits, temperature) / color_space.AB_SCALE
  return jax.image.resize(ab, (ab.shape[0], *size, 2), "bilinear")
