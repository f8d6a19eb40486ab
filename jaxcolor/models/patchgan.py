"""The pix2pix PatchGAN discriminator (Isola et al. 2017, section 3.2.2).

A faithful port of `NLayerDiscriminator` from the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcolor.models import layers

Dtype = Any


def receptive_field(num_layers: int) -> int:
  """Side of the input patch one output logit sees (70 for num_layers=3).

  num_layers stride-2 and two stride-1 convolutions, all 4x4: walking back
  from one logit, each layer adds 3 input pixels times the product of the
  strides below it.
  """
  strides = [2] * num_layers + [1, 1]
  field, jump = 1, 1
  for stride in strides:
    field += 3 * jump
    jump *= stride
  return field


def reference_layer_paths(num_layers: int) -> dict[str, str]:
  """Our layer name -> its prefix in a reference `NLayerDiscriminator` state dict.

  The reference is one `Sequential` named `model`: [conv, LReLU], then
  [conv, norm, LReLU] num_layers times, then the logit conv.
  """
  paths = {"conv_0": "model.0"}
  for layer in range(1, num_layers + 1):
    paths[f"conv_{layer}"] = f"model.{3 * layer - 1}"
    paths[f"norm_{layer}"] = f"model.{3 * layer}"
  paths["logits"] = f"model.{3 * num_layers + 2}"
  return paths


class PatchGANDiscriminator(nn.Module):
  """PatchGAN: an image pair [B, H, W, C] -> one logit per patch [B, H', W', 1].

  The caller concatenates the conditioning L and the (real or generated) ab
  along channels (C = 3), as pix2pix's conditional discriminator does. At
  256 px with num_layers=3 the output is [B, 30, 30, 1] and each logit sees a
  70 x 70 patch ("70 x 70 PatchGAN", the paper's default, section 4.4).

    `conv_0` (4x4, stride 2, bias) -> LeakyReLU(0.2)
    `conv_l` (4x4, stride 2) -> `norm_l` -> LeakyReLU(0.2),  l = 1 .. num_layers - 1
    `conv_L` (4x4, stride 1) -> `norm_L` -> LeakyReLU(0.2),  L = num_layers
    `logits` (4x4, stride 1, bias) -> 1 channel, no activation (the loss
      applies the sigmoid, or none for LSGAN).

  All convolutions pad by 1. Widths are ndf * min(2**l, 8) for layer l. The
  middle convolutions have a bias only with norm != 'batch' (layers.uses_bias).
  `reference_layer_paths` maps layer names to reference state-dict prefixes;
  a reference Conv2d weight converts as `weight.permute(2, 3, 1, 0)`.

  Attributes:
    ndf: width of the first layer.
    num_layers: the reference's n_layers (stride-2 convolutions).
    norm: 'batch' (pix2pix), 'instance' (used by paper 001's PatchGAN) or
      'none'.
    conv_backend: the convolutions' forms: None (XLA's convolutions) or a
      backend's (layers.py).
  """
  ndf: int = 64
  num_layers: int = 3
  norm: layers.NormKind = "batch"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  conv_backend: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Scores patches: [B, H, W, C] -> logits [B, H', W', 1]."""
    if self.num_layers < 1:
      raise ValueError(f"num_layers={self.num_layers}; need at least 1.")
    layers.check_norm(self.norm)
    if x.ndim != 4:
      raise ValueError(f"Expected an NHWC batch [B, H, W, C]; got shape {x.shape}.")
    use_bias = layers.uses_bias(self.norm)

    def conv(h, features, stride, bias, name):
      if stride == 2 and h.shape[1] % 2 == 0 and h.shape[2] % 2 == 0:
        # The same layer as nn.Conv, in the form `conv_backend` gives.
        return layers.Conv2x(
            features, kernel_size=4, padding=1, use_bias=bias,
            kernel_init=layers.conv_init, dtype=self.dtype,
            param_dtype=self.param_dtype, backend=self.conv_backend,
            name=name)(h)
      if stride == 1:
        return layers.Conv1x(
            features, kernel_size=4, padding=1, use_bias=bias,
            kernel_init=layers.conv_init, dtype=self.dtype,
            param_dtype=self.param_dtype, backend=self.conv_backend,
            name=name)(h)
      return nn.Conv(
          features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)),
          use_bias=bias, kernel_init=layers.conv_init, dtype=self.dtype,
          param_dtype=self.param_dtype, name=name)(h)

    h = conv(x, self.ndf, 2, True, "conv_0")
    h = nn.leaky_relu(h, negative_slope=0.2)
    for layer in range(1, self.num_layers + 1):
      stride = 2 if layer < self.num_layers else 1
      h = conv(h, self.ndf * min(2 ** layer, 8), stride, use_bias,
               f"conv_{layer}")
      h = layers.Normalization(
          self.norm, dtype=self.dtype, param_dtype=self.param_dtype,
          name=f"norm_{layer}")(h, train)
      h = nn.leaky_relu(h, negative_slope=0.2)
    return conv(h, 1, 1, True, "logits")
