"""The ResNet-18 U-Net generator: a pretrained ResNet-18 body as the encoder.

Paper 003 (section 6.5) builds its generator with fastai's `DynamicUnet` on a
ResNet-18 body cut before the pooling and classifier, with one input channel
(L) and two outputs (ab); paper 001 (section 3.3) likewise starts the
generator from ImageNet ResNet-18 weights. This is our own port of that
decoder's topology (fastai defaults: no blur, no self-attention, no
normalization inside the decoder convolutions, `last_cross=True`):

  encoder      ResNet18Body: maps at strides 2, 4, 8, 16, 32 (64, 64, 128,
               256, 512 channels at base_features=64)
  middle       BN + ReLU on the stride-32 map, then 3x3 conv 512 -> 1024 and
               1024 -> 512, each with ReLU
  4 blocks     up to strides 16, 8, 4, 2. Each: 1x1 conv to 4 * (in / 2)
               channels + ReLU, pixel shuffle (ICNR-initialized), BN on the
               encoder map of that resolution, concatenate, ReLU, then two
               3x3 conv + ReLU. Widths out: 512, 384, 256, 96 (the block's
               concatenated width, halved in the last block, as fastai).
  full size    pixel shuffle 96 -> 96 channels to the input resolution,
               concatenate the input L (97 channels), one residual block
               (two 3x3 convs, ReLU after the sum), 1x1 conv to ab, tanh.

The output goes through tanh because our targets are ab / 110 in [-1, 1]
(fastai's tutorial generator is linear there).

The encoder's stem takes the one L channel. An RGB-pretrained 7x7 stem is
adapted by summing its kernel over the input channels: on a gray image
replicated into three channels, sum_c W_c * L = (sum_c W_c) * L, so the
summed one-channel stem computes exactly what the RGB stem computes on the
replicated image (fastai's `create_body(n_in=1)` does the same).

Initialization: the encoder as torchvision (resnet.py); decoder convolutions
Kaiming normal (fan_in, ReLU gain) with zero bias, as fastai's `apply_init`;
pixel-shuffle convolutions ICNR (Aitken et al. 2017, "Checkerboard artifact
free sub-pixel convolution") so that the shuffle starts as nearest-neighbour
upsampling of a Kaiming-initialized 1x1 conv; decoder batch norms scale 1 and
offset 1e-3 (fastai's `BatchNorm`); the last 1x1 conv PyTorch's default
weight with bias N(0, 0.01) (fastai's `init_linear` for a layer without
activation).
"""

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcolor.core import ab_bins as ab_bins_lib
from jaxcolor.models.resnet import ResNet18Body, torch_default_kernel_init

Dtype = Any

# fastai: nn.init.kaiming_normal_ (fan_in, gain sqrt(2), untruncated).
decoder_conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

ENCODER_STRIDE = 32


def pixel_shuffle(x: jax.Array, scale: int = 2) -> jax.Array:
  """[B, H, W, C * scale**2] -> [B, H * scale, W * scale, C].

  PyTorch's `nn.PixelShuffle` channel order: output pixel (h * s + i,
  w * s + j) of channel c reads input channel c * s**2 + i * s + j.
  """
  batch, height, width, channels = x.shape
  if channels % (scale * scale):
    raise ValueError(
        f"pixel_shuffle needs channels divisible by scale**2={scale * scale}; "
        f"got {channels}.")
  features = channels // (scale * scale)
  x = x.reshape(batch, height, width, features, scale, scale)
  x = x.transpose(0, 1, 4, 2, 5, 3)                 # [B, H, i, W, j, C]
  return x.reshape(batch, height * scale, width * scale, features)


def icnr_init(base_init: Callable = decoder_conv_init,
              scale: int = 2) -> Callable:
  """ICNR: a conv kernel whose pixel-shuffled output is nearest upsampling.

  The kernel [kh, kw, in, C * scale**2] is drawn from `base_init` for C
  output channels and repeated so that the scale**2 sub-pixel channels of
  each output channel (c * scale**2 + k, see `pixel_shuffle`) share one
  kernel. With equal biases, every scale x scale output block then starts
  constant: no checkerboard at initialization.
  """
  groups = scale * scale

  def init(key, shape, dtype=jnp.float32):
    *kernel_shape, channels = shape
    if channels % groups:
      raise ValueError(
          f"icnr_init needs output channels divisible by {groups}; got "
          f"{channels}.")
    kernel = base_init(key, (*kernel_shape, channels // groups), dtype)
    return jnp.repeat(kernel, groups, axis=-1)

  return init


def _decoder_batch_norm(train: bool, dtype: Dtype, param_dtype: Dtype,
                        name: str) -> nn.BatchNorm:
  # fastai's BatchNorm: scale 1, offset 1e-3; PyTorch's momentum and epsilon.
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5,
      bias_init=nn.initializers.constant(1e-3), dtype=dtype,
      param_dtype=param_dtype, name=name)


def _conv3x3(features: int, dtype: Dtype, param_dtype: Dtype,
             name: str) -> nn.Conv:
  return nn.Conv(
      features, (3, 3), padding=((1, 1), (1, 1)),
      kernel_init=decoder_conv_init, bias_init=nn.initializers.zeros,
      dtype=dtype, param_dtype=param_dtype, name=name)


class PixelShuffleICNR(nn.Module):
  """1x1 conv + ReLU + pixel shuffle: doubles height and width.

  Attributes:
    features: output channels (the conv has 4 * features).
  """
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, 2H, 2W, features]."""
    x = nn.Conv(
        4 * self.features, (1, 1), kernel_init=icnr_init(),
        bias_init=nn.initializers.zeros, dtype=self.dtype,
        param_dtype=self.param_dtype, name="conv")(x)
    return pixel_shuffle(nn.relu(x))


class UNetBlock(nn.Module):
  """Upsample, merge with the encoder map of that resolution, two convs.

  Attributes:
    features: output channels of both 3x3 convs.
  """
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array, train: bool) -> jax.Array:
    """x [B, H, W, C], skip [B, 2H, 2W, S] -> [B, 2H, 2W, features]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    up = PixelShuffleICNR(x.shape[-1] // 2, name="shuffle", **kw)(x)
    # fastai normalizes the skip: encoder maps of different stages come out
    # of ReLUs at very different scales than the freshly upsampled path.
    skip = _decoder_batch_norm(train, name="skip_bn", **kw)(skip)
    y = nn.relu(jnp.concatenate([up, skip.astype(up.dtype)], axis=-1))
    y = nn.relu(_conv3x3(self.features, name="conv1", **kw)(y))
    return nn.relu(_conv3x3(self.features, name="conv2", **kw)(y))


class ResNet18UNet(nn.Module):
  """ResNet-18 encoder, fastai DynamicUnet-style decoder, tanh ab output.

  31,099,672 parameters at the defaults (11,170,240 in the encoder).

  Attributes:
    output_channels: 2 (ab / 110).
    input_channels: 1 (L / 50 - 1). The weight import (torchvision_import.py)
      sums an RGB stem down to this many channels.
    base_features: encoder width (64 = torchvision ResNet-18; see
      `ResNet18Body`). The decoder widths scale with it.
    decoder_features: output widths of the four up blocks, coarsest first;
      None gives fastai's rule (the concatenated width, halved in the last
      block): (512, 384, 256, 96) at base_features=64.
    ab_bins: colour as a distribution (Zhang et al. 2016, core/ab_bins.py;
      beyond papers 001 and 003), as the pix2pix U-Net's option: the
      decoder stops at the block of stride 2**bins_level (1/4 size at 2, as
      Zhang et al.), a 1x1 convolution scores the in-gamut a*b* bins there,
      and the output is the pair (annealed mean at `bins_temperature`,
      network-scaled and resized bilinearly to the input's size; float32
      logits). The blocks past that stride, the full-size shuffle and the
      last residual block are not built.
  """
  output_channels: int = 2
  input_channels: int = 1
  base_features: int = 64
  decoder_features: Optional[Sequence[int]] = None
  ab_bins: bool = False
  bins_level: int = 2
  bins_temperature: float = ab_bins_lib.PAPER_TEMPERATURE
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Lightness to chrominance.

    Args:
      x: [B, H, W, input_channels], H and W multiples of 32.
      train: batch statistics (and their running update) when True.

    Returns:
      [B, H, W, output_channels] in (-1, 1); with `ab_bins`, the pair
      (that, float32 logits [B, H / 2**bins_level, W / 2**bins_level, Q]).
    """
    _, height, width, channels = x.shape
    if channels != self.input_channels:
      raise ValueError(
          f"ResNet18UNet(input_channels={self.input_channels}) got an input "
          f"with {channels} channels (shape {x.shape}).")
    if height % ENCODER_STRIDE or width % ENCODER_STRIDE:
      raise ValueError(
          f"ResNet18UNet needs height and width that are multiples of "
          f"{ENCODER_STRIDE} (the encoder halves the size five times); got "
          f"{height}x{width}.")
    if self.decoder_features is not None and len(self.decoder_features) != 4:
      raise ValueError(
          f"decoder_features needs 4 widths (strides 16, 8, 4, 2); got "
          f"{tuple(self.decoder_features)}.")
    if self.ab_bins and not 1 <= self.bins_level <= 4:
      raise ValueError(f"bins_level={self.bins_level} is invalid: between 1 "
                       "and 4 (the decoder's blocks end at strides 16 to 2).")
    if self.ab_bins and not self.bins_temperature > 0:
      raise ValueError(f"bins_temperature={self.bins_temperature} is "
                       "invalid: a positive temperature.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.astype(self.dtype)

    features = ResNet18Body(self.base_features, name="encoder", **kw)(x, train)
    y = features[-1]
    bottom = y.shape[-1]
    y = nn.relu(_decoder_batch_norm(train, name="middle_bn", **kw)(y))
    y = nn.relu(_conv3x3(2 * bottom, name="middle_conv1", **kw)(y))
    y = nn.relu(_conv3x3(bottom, name="middle_conv2", **kw)(y))

    skips = features[-2::-1]                         # strides 16, 8, 4, 2
    if self.ab_bins:  # Up to the block of stride 2**bins_level.
      skips = skips[:len(skips) + 1 - self.bins_level]
    for i, skip in enumerate(skips):
      if self.decoder_features is not None:
        block_features = self.decoder_features[i]
      else:
        merged = y.shape[-1] // 2 + skip.shape[-1]
        block_features = merged if i < 3 else merged // 2
      y = UNetBlock(block_features, name=f"up{i + 1}", **kw)(y, skip, train)

    if self.ab_bins:
      logits = nn.Conv(ab_bins_lib.num_bins(), (1, 1),
                       kernel_init=torch_default_kernel_init,
                       name="bins_head", **kw)(y).astype(jnp.float32)
      ab = ab_bins_lib.decode_to_net(logits, self.bins_temperature,
                                     (height, width))
      return ab.astype(self.dtype), logits

    y = PixelShuffleICNR(y.shape[-1], name="final_shuffle", **kw)(y)
    # fastai's `last_cross`: the input itself joins the last residual block,
    # so full-resolution detail of L reaches the output directly.
    y = jnp.concatenate([y, x], axis=-1)
    merged = y.shape[-1]
    residual = nn.relu(_conv3x3(merged, name="final_conv1", **kw)(y))
    residual = _conv3x3(merged, name="final_conv2", **kw)(residual)
    y = nn.relu(y + residual)
    y = nn.Conv(
        self.output_channels, (1, 1), kernel_init=torch_default_kernel_init,
        bias_init=nn.initializers.normal(0.01), name="output_conv", **kw)(y)
    return jnp.tanh(y)
