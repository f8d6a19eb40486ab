"""The pix2pix U-Net generator (Isola et al. 2017, appendix 6.1.1).

A faithful port of `UnetGenerator` / `UnetSkipConnectionBlock` from the
reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix,
models/networks.py), here mapping lightness L to chroma ab.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcolor.core import ab_bins as ab_bins_lib
from jaxcolor.models import layers

Dtype = Any


def level_widths(num_downsamplings: int, ngf: int) -> list[int]:
  """Channels after the down convolution of each level, outermost first.

  The reference doubles the width at each of the first four levels and then
  stays at `ngf * 8` ("C64-C128-C256-C512-C512-C512-C512-C512" for the
  256-px, eight-level encoder of the paper's appendix 6.1.1).
  """
  return [ngf * min(2 ** level, 8) for level in range(num_downsamplings)]


def reference_layer_paths(num_downsamplings: int) -> dict[str, str]:
  """Our layer name -> its prefix in a reference `UnetGenerator` state dict.

  The reference nests one `UnetSkipConnectionBlock` per level, each a
  `Sequential` named `model`: [conv, child, ReLU, convT, Tanh] at the outermost
  level, [LReLU, conv, ReLU, convT, norm] at the innermost and
  [LReLU, conv, norm, child, ReLU, convT, norm(, Dropout)] in between.
  """
  innermost = num_downsamplings - 1
  paths = {"down_0": "model.model.0", "up_0": "model.model.3"}
  block = "model.model.1.model"
  for level in range(1, num_downsamplings):
    paths[f"down_{level}"] = f"{block}.1"
    if level == innermost:
      paths[f"up_{level}"] = f"{block}.3"
      paths[f"up_norm_{level}"] = f"{block}.4"
    else:
      paths[f"down_norm_{level}"] = f"{block}.2"
      paths[f"up_{level}"] = f"{block}.5"
      paths[f"up_norm_{level}"] = f"{block}.6"
    block = f"{block}.3.model"
  return paths


class UNetGenerator(nn.Module):
  """pix2pix U-Net: L [B, H, W, C_in] -> ab [B, H, W, output_channels] in (-1, 1).

  Level i = 0 (outermost) ... n - 1 (innermost, n = num_downsamplings) is the
  reference's `UnetSkipConnectionBlock` at nesting depth i. Every level halves
  the size with a 4x4, stride-2, padding-1 convolution and doubles it back
  with a 4x4, stride-2, padding-1 transposed convolution; the decoder of level
  i reads the concatenation [encoder output of level i, decoder output of level
  i + 1] (skip first, as the reference's `torch.cat([x, model(x)], 1)`).

    encoder, level i: LeakyReLU(0.2) (not at i = 0) -> `down_i` ->
                      `down_norm_i` (not at i = 0, not at the innermost level)
    decoder, level i: ReLU -> `up_i` -> `up_norm_i` (-> Dropout at levels
                      4 .. n - 2); ReLU -> `up_0` -> tanh at i = 0.

  Dropout follows the reference, not the paper's table: the paper (appendix
  6.1.1, "CD512-CD1024-CD1024-C1024...") drops out in the first three decoder
  layers, the reference in the n - 5 `use_dropout` blocks, whose decoder
  layers are the second to fourth at n = 8 (the innermost one has none).

  Parameters are named by level: `down_i`, `down_norm_i`, `up_i`, `up_norm_i`
  (each norm holds `BatchNorm_0/{scale, bias}` and batch_stats `{mean, var}`
  with batch norm, nothing otherwise). `reference_layer_paths` gives, for each,
  the prefix of the matching entries in a reference `UnetGenerator`'s state
  dict (`weight`, `bias`, `running_mean`, `running_var`). Kernels convert as
  `weight.permute(2, 3, 1, 0)` for a Conv2d (`[out, in, kh, kw]`) and
  `weight.permute(2, 3, 0, 1)` for a ConvTranspose2d (`[in, out, kh, kw]`).
  Biases: `up_0` always has one; every other convolution, `down_0` included,
  only with norm != 'batch' (the reference's `use_bias`).

  Widths follow `level_widths` (capped at ngf * 8). For n >= 5 the network is
  the reference's exactly (54,409,858 parameters for 1 -> 2 channels, n = 8,
  ngf = 64, batch norm); for 2 <= n < 5, which the reference does not build
  (it always has at least five levels), the same rule gives a shallower U-Net
  for cheap tests.

  The reference's innermost encoder has no normalization: its output is the
  1 x 1 bottleneck code at the intended input size, which instance norm, or
  batch norm over the paper's batches of one, would set to a constant.

  Attributes:
    output_channels: channels of the output (2: a and b).
    num_downsamplings: levels n; inputs must be divisible by 2**n (the
      bottleneck is 1 x 1 at 2**n pixels: 8 for 256 px, 7 for 128 px).
    ngf: width of the outermost level.
    norm: 'batch', 'instance' or 'none' (see layers.Normalization).
    dropout_rate: the reference's `use_dropout` (0.5 in pix2pix, which uses
      dropout as its only noise source, section 3.1 of the paper); applied
      when train=True with the rng 'dropout'. 0 disables it.
    conv_backend: the stride-2 layers' forms: None (XLA's convolutions)
      or a backend's (layers.py); parameters and function are the same.
    ab_bins: colour as a distribution (Zhang et al. 2016, core/ab_bins.py;
      beyond the pix2pix paper): the decoder stops at level `bins_level`
      (size H / 2**bins_level, 1/4 as Zhang et al.), where a 1x1
      convolution `bins_head` reads the input the next level would have
      read ([skip, decoder output], ReLU) and scores the in-gamut a*b* bins.
      The call then returns (ab, logits): ab the annealed mean at
      `bins_temperature`, resized bilinearly to the input's size, and the
      float32 logits [B, H / 2**bins_level, W / 2**bins_level, Q] for the
      rebalanced cross-entropy. The levels below `bins_level` are not built.
  """
  output_channels: int = 2
  num_downsamplings: int = 8
  ngf: int = 64
  norm: layers.NormKind = "batch"
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  conv_backend: Any = None
  ab_bins: bool = False
  bins_level: int = 2
  bins_temperature: float = ab_bins_lib.PAPER_TEMPERATURE

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    """Colors a batch: [B, H, W, C_in] -> [B, H, W, output_channels]
    (with `ab_bins`: the pair (ab, logits))."""
    n = self.num_downsamplings
    if n < 2:
      raise ValueError(f"num_downsamplings={n}; the U-Net needs at least 2.")
    layers.check_norm(self.norm)
    if x.ndim != 4:
      raise ValueError(f"Expected an NHWC batch [B, H, W, C]; got shape {x.shape}.")
    height, width = x.shape[1:3]
    if height % 2 ** n or width % 2 ** n:
      raise ValueError(
          f"Input size {height}x{width} is not divisible by 2**{n} = {2 ** n}, "
          f"as a U-Net with num_downsamplings={n} needs.")
    if self.ab_bins and not 1 <= self.bins_level < n:
      raise ValueError(f"bins_level={self.bins_level} is invalid: between 1 "
                       f"and num_downsamplings - 1 = {n - 1}.")
    if self.ab_bins and not self.bins_temperature > 0:
      raise ValueError(f"bins_temperature={self.bins_temperature} is "
                       "invalid: a positive number.")

    use_bias = layers.uses_bias(self.norm)
    widths = level_widths(n, self.ngf)
    # Decoder level i writes the width level i - 1's encoder wrote (its skip).
    up_widths = [self.output_channels] + widths[:-1]
    innermost = n - 1
    # The reference's `use_dropout` blocks: the n - 5 levels between the
    # innermost one and the four width-doubling outer levels.
    dropout_levels = range(4, innermost)

    def conv(features, name, bias):
      return layers.Conv2x(
          features, kernel_size=4, padding=1, use_bias=bias,
          kernel_init=layers.conv_init, dtype=self.dtype,
          param_dtype=self.param_dtype, backend=self.conv_backend,
          name=name)

    def up_conv(features, name, bias):
      return layers.ConvTranspose2x(
          features, kernel_size=4, padding=1, use_bias=bias,
          kernel_init=layers.conv_init, dtype=self.dtype,
          param_dtype=self.param_dtype, backend=self.conv_backend,
          name=name)

    def norm(name):
      return layers.Normalization(
          self.norm, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    skips = []
    h = x
    for level in range(n):
      if level > 0:
        h = nn.leaky_relu(h, negative_slope=0.2)
      # The outermost convolution, with no norm after it, still follows the
      # norm's bias rule: the reference passes `bias=use_bias` to every
      # encoder convolution.
      h = conv(widths[level], f"down_{level}", use_bias)(h)
      if 0 < level < innermost:
        h = norm(f"down_norm_{level}")(h, train)
      if level < innermost:
        skips.append(h)

    last_level = self.bins_level if self.ab_bins else 1
    for level in reversed(range(last_level, n)):
      if level < innermost:
        # The reference's in-place LeakyReLU turns the skip it concatenates
        # into LeakyReLU(skip); the ReLU that comes next makes that the same
        # as concatenating the skip itself.
        h = jnp.concatenate([skips[level], h], axis=-1)
      h = nn.relu(h)
      h = up_conv(up_widths[level], f"up_{level}", use_bias)(h)
      h = norm(f"up_norm_{level}")(h, train)
      if level in dropout_levels and self.dropout_rate > 0:
        h = nn.Dropout(self.dropout_rate, deterministic=not train,
                       name=f"dropout_{level}")(h)
    h = nn.relu(jnp.concatenate([skips[last_level - 1], h], axis=-1))
    if self.ab_bins:
      logits = nn.Conv(ab_bins_lib.num_bins(), (1, 1), dtype=self.dtype,
                       param_dtype=self.param_dtype, kernel_init=layers.conv_init,
                       name="bins_head")(h).astype(jnp.float32)
      ab = ab_bins_lib.decode_to_net(logits, self.bins_temperature,
                                     (height, width))
      return ab.astype(self.dtype), logits
    h = up_conv(self.output_channels, "up_0", True)(h)
    return jnp.tanh(h)
