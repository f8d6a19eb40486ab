"""sRGB <-> CIE L*a*b* in JAX, and the scalings the networks see.

Every system in jaxcolor works in CIE L*a*b* (D65 white, 2 degree observer),
the space `skimage.color.rgb2lab` uses, which the pix2pix colorization
reference and the other papers convert with. The conversion is written here in
`jax.numpy` so it runs inside the jitted training step on the device: the host
ships uint8 RGB, and `split_lab` turns it into the network's input and target.

Network scaling follows the pix2pix colorization reference
(`colorization_dataset.py`): lightness L in [0, 100] becomes L / 50 - 1 in
[-1, 1]; a*b* become ab / 110, so the tanh output range [-1, 1] covers
[-110, 110], a little more than the sRGB gamut's a*b* extent.

All results are float32, computed in float32 whatever the input dtype: Lab
values reach 100, and bfloat16 would round them to steps of 0.5.
"""

import jax
import jax.numpy as jnp
import numpy as np

# sRGB primaries with D65 white, as `skimage.color.colorconv.xyz_from_rgb`; the
# inverse is computed in float64 once, as skimage does with `linalg.inv`.
_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                          [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]])
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)

# CIE XYZ of the D65 reference white, 2 degree observer (Y normalized to 1).
D65_WHITE = (0.95047, 1.0, 1.08883)

# CIE 1976 L*a*b*: f(t) = t^(1/3) above (6/29)^3, else the tangent line
# t / (3 (6/29)^2) + 4/29. skimage writes the same with the rounded constants
# 0.008856 and 7.787; the difference is below 1e-4 in L.
_DELTA = 6.0 / 29.0
_LAB_EPSILON = _DELTA ** 3
_LAB_SLOPE = 1.0 / (3.0 * _DELTA ** 2)
_LAB_OFFSET = 4.0 / 29.0

# sRGB transfer function (IEC 61966-2-1), with skimage's thresholds.
_SRGB_DECODE_THRESHOLD = 0.04045
_SRGB_ENCODE_THRESHOLD = 0.0031308

# pix2pix colorization reference: A = L / 50 - 1, B = ab / 110.
LIGHTNESS_HALF_RANGE = 50.0
AB_SCALE = 110.0


def _float_rgb(rgb: jax.Array) -> jax.Array:
  """uint8 RGB (0..255) or float RGB in [0, 1] -> float32 in [0, 1]."""
  rgb = jnp.asarray(rgb)
  if rgb.shape[-1:] != (3,):
    raise ValueError(f"RGB must have 3 channels on the last axis; got shape {rgb.shape}.")
  if rgb.dtype == jnp.uint8:
    return rgb.astype(jnp.float32) / 255.0
  if not jnp.issubdtype(rgb.dtype, jnp.floating):
    raise TypeError(f"RGB must be uint8 or float in [0, 1]; got {rgb.dtype}.")
  return rgb.astype(jnp.float32)


def _apply_matrix(matrix: np.ndarray, x: jax.Array) -> jax.Array:
  # Broadcast products rather than a matmul: at default precision GPUs and
  # TPUs round float32 matmul operands to 10 or fewer mantissa bits (TF32,
  # bfloat16 passes), errors of 1e-3 relative in XYZ; elementwise products
  # stay float32.
  return jnp.sum(x[..., None, :] * jnp.asarray(matrix, jnp.float32), axis=-1)


def _srgb_decode(rgb: jax.Array) -> jax.Array:
  # The clamp keeps the branch jnp.where discards free of NaN (negative base
  # to a fractional power), whose gradient would otherwise poison the result.
  curve = ((jnp.maximum(rgb, _SRGB_DECODE_THRESHOLD) + 0.055) / 1.055) ** 2.4
  return jnp.where(rgb > _SRGB_DECODE_THRESHOLD, curve, rgb / 12.92)


def _srgb_encode(linear: jax.Array) -> jax.Array:
  curve = 1.055 * jnp.maximum(linear, _SRGB_ENCODE_THRESHOLD) ** (1.0 / 2.4) - 0.055
  return jnp.where(linear > _SRGB_ENCODE_THRESHOLD, curve, linear * 12.92)


def _lab_f(t: jax.Array) -> jax.Array:
  # Clamped for the same reason as in _srgb_decode: cbrt'(0) is infinite.
  curve = jnp.cbrt(jnp.maximum(t, _LAB_EPSILON))
  return jnp.where(t > _LAB_EPSILON, curve, t * _LAB_SLOPE + _LAB_OFFSET)


def _lab_f_inverse(s: jax.Array) -> jax.Array:
  return jnp.where(s > _DELTA, s ** 3, (s - _LAB_OFFSET) / _LAB_SLOPE)


# The public functions are jitted so that eager callers (evaluation and
# colorization on the host) compile once instead of dispatching op by op;
# inside an enclosing jit they are simply inlined.
@jax.jit
def rgb_to_lab(rgb: jax.Array) -> jax.Array:
  """sRGB -> CIE L*a*b* (D65, 2 degree), as `skimage.color.rgb2lab`.

  Args:
    rgb: [..., 3] float RGB in [0, 1] (any float dtype), or uint8 RGB in
      0..255 (divided by 255, as skimage's `img_as_float`). Any leading shape,
      including a single pixel [3].

  Returns:
    [..., 3] float32 (L* in [0, 100], a*, b* in about [-110, 110]).
  """
  linear = _srgb_decode(_float_rgb(rgb))
  xyz = _apply_matrix(_XYZ_FROM_RGB, linear) / jnp.asarray(D65_WHITE, jnp.float32)
  fx, fy, fz = jnp.moveaxis(_lab_f(xyz), -1, 0)
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


@jax.jit
def lab_to_rgb(lab: jax.Array) -> jax.Array:
  """CIE L*a*b* (D65, 2 degree) -> sRGB in [0, 1], as `skimage.color.lab2rgb`.

  Out-of-gamut colors are handled as skimage does: a negative f(Z)
  (b* > 200 (L* + 16) / 116) is set to 0 before the inverse, and the final RGB
  is clipped to [0, 1]. skimage also warns about the first case; a jitted
  function cannot, so it is silent here.

  Args:
    lab: [..., 3] L*, a*, b* (any float dtype). Any leading shape.

  Returns:
    [..., 3] float32 RGB in [0, 1].
  """
  lab = jnp.asarray(lab)
  if lab.shape[-1:] != (3,):
    raise ValueError(f"Lab must have 3 channels on the last axis; got shape {lab.shape}.")
  lightness, a, b = jnp.moveaxis(lab.astype(jnp.float32), -1, 0)
  fy = (lightness + 16.0) / 116.0
  fx = fy + a / 500.0
  fz = jnp.maximum(fy - b / 200.0, 0.0)
  xyz = _lab_f_inverse(jnp.stack([fx, fy, fz], axis=-1)) * jnp.asarray(D65_WHITE, jnp.float32)
  rgb = _srgb_encode(_apply_matrix(_RGB_FROM_XYZ, xyz))
  return jnp.clip(rgb, 0.0, 1.0)


@jax.jit
def with_ab(rgb: jax.Array, ab: jax.Array) -> jax.Array:
  """uint8 RGB pixels' L* with new a*b* -> uint8 RGB, in one program.

  `lab_to_rgb` of (`rgb_to_lab(rgb)`'s L*, `ab`), rounded to uint8: the
  colorize path's recombination. L* needs only the luminance Y, so X and Z
  (and their cube roots) are not computed, and the result is quantised
  before it leaves the program; the values are those of the two public
  functions (tests/test_color.py).

  Args:
    rgb: [..., 3] uint8 RGB (or float in [0, 1]).
    ab: [..., 2] a*b* in Lab units, the same leading shape.

  Returns:
    [..., 3] uint8 RGB.
  """
  luminance = jnp.sum(_srgb_decode(_float_rgb(rgb))
                      * jnp.asarray(_XYZ_FROM_RGB[1], jnp.float32), axis=-1)
  lightness = 116.0 * _lab_f(luminance / D65_WHITE[1]) - 16.0
  lab = jnp.concatenate([lightness[..., None], jnp.asarray(ab, jnp.float32)],
                        axis=-1)
  return jnp.round(lab_to_rgb(lab) * 255.0).astype(jnp.uint8)


def lightness_to_net(lightness: jax.Array) -> jax.Array:
  """L* in [0, 100] -> network input in [-1, 1]."""
  return lightness / LIGHTNESS_HALF_RANGE - 1.0


def net_to_lightness(x: jax.Array) -> jax.Array:
  """Network-scaled lightness in [-1, 1] -> L* in [0, 100]."""
  return (x + 1.0) * LIGHTNESS_HALF_RANGE


def ab_to_net(ab: jax.Array) -> jax.Array:
  """a*b* -> network scale (tanh range [-1, 1] covers [-110, 110])."""
  return ab / AB_SCALE


def net_to_ab(x: jax.Array) -> jax.Array:
  """Network-scaled a*b* -> a*b* in Lab units."""
  return x * AB_SCALE


@jax.jit
def split_lab(rgb: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RGB batch as the host ships it -> network input and target.

  Meant to run inside the jitted step, so the host only decodes and crops.

  Args:
    rgb: [..., H, W, 3] uint8 RGB (float in [0, 1] is accepted too).

  Returns:
    lightness: [..., H, W, 1] float32, L* / 50 - 1.
    ab: [..., H, W, 2] float32, a*b* / 110.
  """
  lab = rgb_to_lab(rgb)
  return lightness_to_net(lab[..., :1]), ab_to_net(lab[..., 1:])


@jax.jit
def lab_net_to_rgb(lightness: jax.Array, ab: jax.Array) -> jax.Array:
  """Network-scaled lightness and a*b* -> RGB, the inverse of `split_lab`.

  Args:
    lightness: [..., H, W, 1], L* / 50 - 1.
    ab: [..., H, W, 2], a*b* / 110 (e.g. the generator's tanh output).

  Returns:
    [..., H, W, 3] float32 RGB in [0, 1].
  """
  lab = jnp.concatenate(
      [net_to_lightness(lightness.astype(jnp.float32)), net_to_ab(ab.astype(jnp.float32))],
      axis=-1)
  return lab_to_rgb(lab)
