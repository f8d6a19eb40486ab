"""Colorization quality metrics, one value per image.

Every function maps a batch [B, H, W, C] to [B], so an evaluation loop can
average over images and mask the padding of its last batch. All are jittable
and return float32.

PSNR and SSIM are computed on RGB quantised to 8 bits, i.e. on the image as it
would be saved and as the papers measure saved results. SSIM is that of Wang
et al. 2004 with its defaults (11x11 Gaussian window, sigma 1.5, K1 = 0.01,
K2 = 0.03), per colour channel and averaged, over the window positions that
fit inside the image; it equals `skimage.metrics.structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
channel_axis=-1)`.
"""

import dm_pix as pix
import jax
import jax.numpy as jnp

# Nazeri et al. 2018 count a pixel as correct when each of L*, a*, b* lies
# within 2% of its range of the ground truth: 2% of 100 for L*, 2% of 220
# (a*b* in [-110, 110]) for a* and b*.
PIXEL_ACCURACY_L_TOLERANCE = 2.0
PIXEL_ACCURACY_AB_TOLERANCE = 4.4

_IMAGE_AXES = (-3, -2, -1)


# Jitted so that an eager evaluation loop compiles each metric once.
@jax.jit
def quantize_8bit(rgb: jax.Array) -> jax.Array:
  """RGB in [0, 1] -> the float32 values an 8-bit PNG of it would hold."""
  rgb = jnp.clip(jnp.asarray(rgb, jnp.float32), 0.0, 1.0)
  return jnp.round(rgb * 255.0) / 255.0


@jax.jit
def psnr(pred_rgb: jax.Array, true_rgb: jax.Array) -> jax.Array:
  """Peak signal-to-noise ratio in dB, peak 1, of 8-bit quantised RGB.

  Args:
    pred_rgb, true_rgb: [B, H, W, 3] RGB in [0, 1].

  Returns:
    [B] float32; +inf where the quantised images are identical.
  """
  return pix.psnr(quantize_8bit(pred_rgb), quantize_8bit(true_rgb))


@jax.jit
def ssim(pred_rgb: jax.Array, true_rgb: jax.Array) -> jax.Array:
  """Structural similarity of 8-bit quantised RGB (see the module docstring).

  Args:
    pred_rgb, true_rgb: [B, H, W, 3] RGB in [0, 1]; H and W at least 11.

  Returns:
    [B] float32 in [-1, 1]; 1 where the quantised images are identical.
  """
  return pix.ssim(quantize_8bit(pred_rgb), quantize_8bit(true_rgb),
                  max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


@jax.jit
def pixel_accuracy(pred_lab: jax.Array, true_lab: jax.Array,
                   l_tol: float = PIXEL_ACCURACY_L_TOLERANCE,
                   ab_tol: float = PIXEL_ACCURACY_AB_TOLERANCE) -> jax.Array:
  """Share of pixels whose rounded L*, a*, b* all lie within tolerance.

  Nazeri et al. 2018's accuracy: both images' Lab values are rounded to
  integers, and a pixel counts as correct when |dL| <= l_tol, |da| <= ab_tol
  and |db| <= ab_tol. With integer differences, ab_tol = 4.4 admits |da| <= 4.

  Args:
    pred_lab, true_lab: [B, H, W, 3] in Lab units.

  Returns:
    [B] float32 in [0, 1].
  """
  diff = jnp.abs(jnp.round(jnp.asarray(pred_lab, jnp.float32))
                 - jnp.round(jnp.asarray(true_lab, jnp.float32)))
  tolerance = jnp.asarray([l_tol, ab_tol, ab_tol], jnp.float32)
  correct = jnp.all(diff <= tolerance, axis=-1)
  return jnp.mean(correct.astype(jnp.float32), axis=(-2, -1))


@jax.jit
def ab_mse(pred_ab: jax.Array, true_ab: jax.Array) -> jax.Array:
  """Mean squared a*b* error per image.

  Args:
    pred_ab, true_ab: [B, H, W, 2] in Lab units (not network scale).

  Returns:
    [B] float32.
  """
  diff = jnp.asarray(pred_ab, jnp.float32) - jnp.asarray(true_ab, jnp.float32)
  return jnp.mean(jnp.square(diff), axis=_IMAGE_AXES)


@jax.jit
def ab_mae(pred_ab: jax.Array, true_ab: jax.Array) -> jax.Array:
  """Mean absolute a*b* error per image.

  Args:
    pred_ab, true_ab: [B, H, W, 2] in Lab units (not network scale).

  Returns:
    [B] float32.
  """
  diff = jnp.asarray(pred_ab, jnp.float32) - jnp.asarray(true_ab, jnp.float32)
  return jnp.mean(jnp.abs(diff), axis=_IMAGE_AXES)
