"""Colorization quality metrics, one value per image.

Every function maps a batch [B, H, W, C] to [B], so an evaluation loop can
average over images and mask the padding of its last batch. All are jittable
and return float32.

PSNR and SSIM are computed on RGB quantised to 8 bits, i.e. on the image as it
would be saved and as the papers measure saved results. SSIM is that of Wang
et al. 2004 with its defaults (11x11 Gaussian window, sigma 1.5, K1 = 0.01,
K2 = 0.03), per color channel and averaged, over the window positions that
fit inside the image; it equals `skimage.metrics.structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
channel_axis=-1)`.

Formulas, color spaces and references of every metric: docs/metrics.md.
"""

import functools

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
  return _mean_ab_error(pred_ab, true_ab, jnp.square)


@jax.jit
def ab_mae(pred_ab: jax.Array, true_ab: jax.Array) -> jax.Array:
  """Mean absolute a*b* error per image.

  Args:
    pred_ab, true_ab: [B, H, W, 2] in Lab units (not network scale).

  Returns:
    [B] float32.
  """
  return _mean_ab_error(pred_ab, true_ab, jnp.abs)


def _mean_ab_error(pred_ab: jax.Array, true_ab: jax.Array, penalty) -> jax.Array:
  """[B]: the mean over each image of `penalty(pred_ab - true_ab)`."""
  diff = jnp.asarray(pred_ab, jnp.float32) - jnp.asarray(true_ab, jnp.float32)
  return jnp.mean(penalty(diff), axis=_IMAGE_AXES)


# Zhang et al. 2016 (Colorful Image Colorization, section 3.1) sweep the ab
# distance threshold from 0 to 150 for their raw accuracy AuC.
AUC_MAX_DISTANCE = 150.0
AUC_STEP = 1.0


@functools.partial(jax.jit, static_argnames=("max_distance", "step"))
def raw_accuracy_auc(pred_ab: jax.Array, true_ab: jax.Array,
                     max_distance: float = AUC_MAX_DISTANCE,
                     step: float = AUC_STEP) -> jax.Array:
  """Zhang et al.'s raw accuracy AuC: the area under the share of pixels
  whose a*b* lie within distance t of the truth, t swept 0..max_distance.

  With thresholds t_k = k * step, k = 0..K (K = max_distance / step), the
  curve acc(t) = share of pixels with ||ab_pred - ab_true||_2 <= t is
  integrated by the trapezoid rule and divided by max_distance, so a perfect
  prediction scores 1. The sum over thresholds is taken per pixel in closed
  form (a pixel at distance d lies within K - ceil(d / step) + 1 of them),
  so memory does not grow with the number of thresholds.

  Args:
    pred_ab, true_ab: [B, H, W, 2] in Lab units (not network scale).
    max_distance, step: the sweep; max_distance a multiple of step.

  Returns:
    [B] float32 in [0, 1].
  """
  num_intervals = round(max_distance / step)
  diff = jnp.asarray(pred_ab, jnp.float32) - jnp.asarray(true_ab, jnp.float32)
  distance = jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1))
  within = jnp.clip(num_intervals - jnp.ceil(distance / step) + 1, 0,
                    num_intervals + 1)
  at_zero = (distance <= 0.0).astype(jnp.float32)
  at_max = (distance <= num_intervals * step).astype(jnp.float32)
  per_pixel = (within - 0.5 * (at_zero + at_max)) / num_intervals
  return jnp.mean(per_pixel, axis=(-2, -1))


@jax.jit
def colorfulness(rgb: jax.Array) -> jax.Array:
  """Hasler and Suesstrunk 2003's colorfulness M of 8-bit quantised RGB.

  rg = R - G, yb = (R + G) / 2 - B on the 0..255 scale;
  M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2),
  population statistics over the image's pixels. 0 for a gray image; the
  paper's scale calls about 33 "moderately", 59 "quite" and 82 "highly
  colorful".

  Args:
    rgb: [B, H, W, 3] RGB in [0, 1].

  Returns:
    [B] float32.
  """
  rgb = quantize_8bit(rgb) * 255.0
  red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  rg = red - green
  yb = 0.5 * (red + green) - blue
  axes = (-2, -1)
  spread = jnp.sqrt(jnp.var(rg, axis=axes) + jnp.var(yb, axis=axes))
  center = jnp.sqrt(jnp.square(jnp.mean(rg, axis=axes))
                    + jnp.square(jnp.mean(yb, axis=axes)))
  return spread + 0.3 * center


def image_metrics(pred_rgb: jax.Array, pred_lab: jax.Array, true_rgb: jax.Array,
                  true_lab: jax.Array, true_colorfulness: jax.Array, *,
                  auc_max_distance: float = AUC_MAX_DISTANCE,
                  auc_step: float = AUC_STEP) -> dict[str, jax.Array]:
  """Every per-image colorization metric [B] of one prediction.

  The one place the set of reported metrics is defined: the evaluator
  (network outputs on an evaluation split) and `jaxcolor.score` (saved
  images of any colorizer) both report exactly these.

  Args:
    pred_rgb, true_rgb: [B, H, W, 3] RGB in [0, 1].
    pred_lab, true_lab: [B, H, W, 3] in Lab units.
    true_colorfulness: [B], `colorfulness(true_rgb)` (computed once per
      image by the caller, which scores several predictions against it).
    auc_max_distance, auc_step: the raw accuracy AuC's sweep.

  Returns:
    {name: [B] float32}; `colorfulness_difference` is negative where the
    prediction is less colorful than the photo (the usual desaturation).
  """
  pred_colorfulness = colorfulness(pred_rgb)
  pred_ab, true_ab = pred_lab[..., 1:], true_lab[..., 1:]
  return {
      "psnr": psnr(pred_rgb, true_rgb),
      "ssim": ssim(pred_rgb, true_rgb),
      "pixel_accuracy": pixel_accuracy(pred_lab, true_lab),
      "raw_accuracy_auc": raw_accuracy_auc(
          pred_ab, true_ab, max_distance=auc_max_distance, step=auc_step),
      "ab_mse": ab_mse(pred_ab, true_ab),
      "ab_mae": ab_mae(pred_ab, true_ab),
      "colorfulness": pred_colorfulness,
      "colorfulness_difference": pred_colorfulness - true_colorfulness,
  }
