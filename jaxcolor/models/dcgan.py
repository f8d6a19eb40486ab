"""The DCGAN patch discriminator of the DLA C-DCGAN.

Paper 002 (Gui, Gu and Shi), sec. 3.2 and Table 1.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcolor.models import layers

Dtype = Any


class DCGANDiscriminator(nn.Module):
  """Four 4x4 stride-2 convolutions and a stride-1 one to a map of logits.

  Input [B, H, W, 3]: L / 50 - 1 and ab / 110 concatenated by the caller (the
  conditional GAN sees the condition L, paper 002 sec. 3.2). Output
  [B, h, w, 1] of LOGITS, one per patch: the probability of "real" is
  sigmoid(logits), which the loss applies itself (numerically stable
  sigmoid cross-entropy on logits).

  Layers (paper 002 Table 1): 4x4 convolutions with strides 2, 2, 2, 2, 1 and
  widths 64, 128, 256, 512, 1, LeakyReLU with slope 0.2 (sec. 3.2). The
  stride-2 convolutions pad by 1, PyTorch-DCGAN/pix2pix style, so each halves
  the side exactly; H and W must be divisible by 2 ** len(widths) (16).

  Last layer: Table 1 gives Conv5 as 4x4, stride 1, one channel; the text
  says "a 1x1 convolution is used to map the feature map to a one-dimensional
  output". The default follows the table (final_kernel_size=4): it is the
  specific spec, and the text's phrase reads as well as "to a one-channel
  map". final_kernel_size=1 gives the text's version.

    final_kernel_size | output at 256 px | receptive field of one logit
    4 (default)       | [B, 15, 15, 1]   | 94 x 94 px
    1                 | [B, 16, 16, 1]   | 46 x 46 px

  (Side: H / 16 + 2 p - k + 1 with k = final_kernel_size and padding
  p = (k - 1) // 2. Receptive field, from the last layer back: r = k, then
  r = 2 (r - 1) + 4 for each stride-2 layer.)

  Normalization: the text says "All convolutional layers are batch
  normalized"; here the first layer has none (norm_first_layer=False) and the
  last layer none: DCGAN (Radford et al. 2016, sec. 3) found that batch norm
  on the discriminator input layer caused sample oscillation and instability,
  and pix2pix's discriminator does the same. A normalized output layer could
  not express the logits' scale. norm_first_layer=True follows the text.
  The convolutions followed by batch norm carry no bias.

  Attributes:
    widths: widths of the stride-2 layers (Table 1: 64, 128, 256, 512).
    final_kernel_size: 4 (Table 1) or 1 (the text).
    norm_first_layer: normalize the first layer too (paper text) or not
      (DCGAN convention, the default).
    norm: 'batch' (the paper), 'instance' or 'none'.
    negative_slope: LeakyReLU slope, 0.2 (sec. 3.2).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  widths: tuple[int, ...] = (64, 128, 256, 512)
  final_kernel_size: int = 4
  norm_first_layer: bool = False
  norm: layers.NormKind = "batch"
  negative_slope: float = 0.2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    layers.check_norm(self.norm)
    if self.final_kernel_size < 1:
      raise ValueError(
          f"final_kernel_size={self.final_kernel_size}; must be >= 1.")
    factor = 2 ** len(self.widths)
    if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(
          f"DCGANDiscriminator takes [B, H, W, C] with H and W divisible by "
          f"{factor} ({len(self.widths)} stride-2 layers); got shape "
          f"{tuple(x.shape)}.")
    side = min(x.shape[1], x.shape[2]) // factor
    k = self.final_kernel_size
    # Padding 1 for Table 1's 4x4 layer (PyTorch-style, as the layers before
    # it); none for the text's 1x1, which keeps the map as it is.
    pad = (k - 1) // 2
    if side + 2 * pad - k + 1 < 1:
      raise ValueError(
          f"Input {tuple(x.shape)} leaves a {side}x{side} map, too small for "
          f"the final {self.final_kernel_size}x{self.final_kernel_size} "
          f"convolution.")

    for index, width in enumerate(self.widths):
      norm = self.norm if (index > 0 or self.norm_first_layer) else "none"
      x = nn.Conv(width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                  use_bias=layers.uses_bias(norm),
                  kernel_init=layers.conv_init, dtype=self.dtype,
                  param_dtype=self.param_dtype)(x)
      x = layers.Normalization(norm, dtype=self.dtype,
                               param_dtype=self.param_dtype)(x, train)
      x = nn.leaky_relu(x, negative_slope=self.negative_slope)

    return nn.Conv(1, (k, k), padding=((pad, pad), (pad, pad)),
                   kernel_init=layers.conv_init, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="to_logits")(x)
