"""The MLP Improver of pix2pix + MLP (paper 000, sec. 3.3): a patch denoiser.

One multilayer perceptron, shared by every non-overlapping patch of the
generated image, refines the generator's colors toward the original ones.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcolor.models import layers

Dtype = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "leaky_relu": nn.leaky_relu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
}

# Keeps atanh finite when the generator's tanh output has rounded to +-1.
_ATANH_MARGIN = 1e-6


def to_patches(x: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/p, W/p, p * p * C]; patch rows, then columns, C."""
  batch, height, width, channels = x.shape
  p = patch_size
  x = x.reshape(batch, height // p, p, width // p, p, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, height // p, width // p, p * p * channels)


def from_patches(x: jax.Array, patch_size: int) -> jax.Array:
  """The inverse of `to_patches`: [B, h, w, p * p * C] -> [B, h p, w p, C]."""
  batch, rows, cols, features = x.shape
  p = patch_size
  channels = features // (p * p)
  x = x.reshape(batch, rows, cols, p, p, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, rows * p, cols * p, channels)


class PatchMLPImprover(nn.Module):
  """A residual MLP applied to each non-overlapping patch: refined ab out.

  Input x: [B, H, W, C], the generated color image in Lab as the caller
  concatenates it: [L / 50 - 1, a / 110, b / 110], C = 3. Paper 000 sec. 3.3:
  "The input and the output of the Improver are the color images generated
  by Generator and original color images": a color image is L with ab, so
  the MLP sees the lightness too (it tells, e.g., a bright sky from a dark
  sea in a patch of similar ab). The ab to refine are the LAST
  output_channels channels of x, so C = 2 (ab alone) also works.
  Output: [B, H, W, output_channels], ab / 110 in (-1, 1).

  Patches: the paper's Improver "proceeds in units of patches. This requires
  fewer parameters" (sec. 3.3) and is "fully connected" within its input:
  each p x p x C patch is flattened and mapped by the same MLP to a
  p x p x output_channels correction. Its weights scale with p^2, not with
  (H W)^2 as a dense layer over the whole image would.

  Residual and bound: the paper calls the Improver a de-noiser of the
  generator's output, so the MLP predicts a correction `delta` and
  output = tanh(atanh(ab_in) + delta): delta = 0 returns ab_in (up to a
  1e-6 margin that keeps atanh finite at +-1), the output stays in (-1, 1)
  like the generator's tanh, and, unlike clipping ab_in + delta, every pixel
  keeps a gradient. Near ab_in = 0 it is ab_in + delta to first order. The
  last layer starts at zero (zero_init_output), so the Improver starts as
  the identity on the generator's output, as a residual branch should.

  The paper gives no patch size, widths or activation (sec. 3.3, 4); the
  defaults here are the project's choice.

  Attributes:
    patch_size: side p of the square patches; H and W must be divisible by it.
    hidden_widths: widths of the hidden (fully connected) layers.
    output_channels: 2 (a and b).
    activation: one of ACTIVATIONS' names ('relu' by default).
    zero_init_output: start the last layer at zero (identity Improver).
    dtype: compute dtype (the residual bound is computed in float32).
    param_dtype: parameter dtype.
  """
  patch_size: int = 8
  hidden_widths: tuple[int, ...] = (512, 512)
  output_channels: int = 2
  activation: str = "relu"
  zero_init_output: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # No dropout or normalization: the same in both modes.
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"activation={self.activation!r}; expected one of "
          f"{', '.join(sorted(ACTIVATIONS))}.")
    p = self.patch_size
    if p < 1:
      raise ValueError(f"patch_size={p}; must be >= 1.")
    if x.ndim != 4 or x.shape[1] % p or x.shape[2] % p:
      raise ValueError(
          f"PatchMLPImprover takes [B, H, W, C] with H and W divisible by "
          f"patch_size={p}; got shape {tuple(x.shape)}.")
    if x.shape[-1] < self.output_channels:
      raise ValueError(
          f"PatchMLPImprover needs the {self.output_channels} ab channels last "
          f"in its input; got {x.shape[-1]} channel(s).")
    activation = ACTIVATIONS[self.activation]

    h = to_patches(x, p)
    for width in self.hidden_widths:
      h = nn.Dense(width, kernel_init=layers.conv_init, dtype=self.dtype,
                   param_dtype=self.param_dtype)(h)
      h = activation(h)
    last_init = (nn.initializers.zeros if self.zero_init_output
                 else layers.conv_init)
    delta = nn.Dense(p * p * self.output_channels, kernel_init=last_init,
                     dtype=self.dtype, param_dtype=self.param_dtype,
                     name="to_delta")(h)
    delta = from_patches(delta, p).astype(jnp.float32)

    ab = x[..., -self.output_channels:].astype(jnp.float32)
    ab = jnp.clip(ab, -1.0 + _ATANH_MARGIN, 1.0 - _ATANH_MARGIN)
    return jnp.tanh(jnp.arctanh(ab) + delta)
