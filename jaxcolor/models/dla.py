"""The deep-layer-aggregation generator of the DLA C-DCGAN (paper 002, 3.1).

A symmetric encoder-decoder after Deep Layer Aggregation (Yu et al., CVPR
2018): every downsampling is followed at once by an upsampling that is fused
with the earlier feature maps of the same resolution (iterative aggregation),
and the last node of every scale also receives all earlier maps of that scale
(the paper's "long connections"). The paper's figure 3 is not in its text;
docs/dla_generator.md draws the topology chosen here and argues it from the
paper's sentences.

Nodes are indexed X[i][j]: scale i (resolution H / 2**i, width widths[i]) and
step j along that scale. X[i][0] is the encoder; X[i][j], j >= 1, is the
aggregation node fed by the upsampled X[i+1][j-1]. Scale i has nodes
j = 0 .. depth - i, with depth = len(widths) - 1, so X[0][depth] is the last
upsampling node and, through the chain, aggregates every scale.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcolor.models import layers

Dtype = Any


class ConvBlock(nn.Module):
  """Three stacked 3x3 convolutions, each with normalization and ReLU.

  Paper 002 sec. 3.1: "Each convolution block ... is composed of three
  convolution layers stacked, and the size of the convolution kernel of each
  convolution layer is 3X3 ... each convolutional layer contains batch
  normalization and ReLU activation functions." It is also the fusion of an
  aggregation node: the concatenated inputs enter its first convolution.

  [B, H, W, C_in], or a sequence of [B, H, W, C_k] concatenated here on
  channels (C_in = sum C_k; inside the block so that a recomputed block,
  `DLAGenerator.remat`, keeps only its inputs, not their concatenation)
  -> [B, H, W, features].
  """
  features: int
  norm: layers.NormKind = "batch"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array | Sequence[jax.Array],
               train: bool) -> jax.Array:
    if not isinstance(x, jax.Array):
      x = jnp.concatenate(list(x), axis=-1)
    for _ in range(3):
      x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)),
                  use_bias=layers.uses_bias(self.norm),
                  kernel_init=layers.conv_init, dtype=self.dtype,
                  param_dtype=self.param_dtype)(x)
      x = layers.Normalization(self.norm, dtype=self.dtype,
                               param_dtype=self.param_dtype)(x, train)
      x = nn.relu(x)
    return x


class _ScaleStep(nn.Module):
  """The fields `Downsample` and `Upsample` share: output channels, the
  normalization, and the compute and parameter dtypes."""
  features: int
  norm: layers.NormKind = "batch"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32


class Downsample(_ScaleStep):
  """A 4x4 stride-2 convolution (padding 1) with normalization and ReLU.

  Paper 002 sec. 3.1 replaces DLA's pooling by "step-size convolution", and
  sec. 3.2 describes the discriminator as "similar to the downsampling path of
  the generation network, using a 4X4 convolutional layer with a stride of 2":
  hence 4x4, stride 2. It sits between blocks, where pooling sat, and doubles
  the width.

  [B, H, W, C] -> [B, H/2, W/2, features].
  """
  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, (4, 4), strides=(2, 2),
                padding=((1, 1), (1, 1)), use_bias=layers.uses_bias(self.norm),
                kernel_init=layers.conv_init, dtype=self.dtype,
                param_dtype=self.param_dtype)(x)
    return _normalize_relu(self, x, train)


class Upsample(_ScaleStep):
  """A 4x4 stride-2 transposed convolution (padding 1), normalization, ReLU.

  Paper 002 sec. 3.1: "step-size transposed convolution to complete
  up-sampling". Kernel 4 with stride 2 makes every output pixel receive
  exactly 2x2 taps; kernel 3 with output_padding 1 would give even and odd
  output rows 1 and 2 taps, the uneven overlap behind checkerboard artefacts
  (Odena et al., Distill 2016). It mirrors the 4x4 downsampling and is the
  pix2pix decoder's choice.

  [B, H, W, C] -> [B, 2H, 2W, features]. `conv_backend`: the transposed
  convolution's forms (None: XLA's; layers.py).
  """
  conv_backend: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.ConvTranspose2x(
        self.features, kernel_size=4, padding=1,
        use_bias=layers.uses_bias(self.norm), dtype=self.dtype,
        param_dtype=self.param_dtype, backend=self.conv_backend)(x)
    return _normalize_relu(self, x, train)


def _normalize_relu(module: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  """`module.norm` normalization then ReLU, as every DLA block ends."""
  x = layers.Normalization(module.norm, dtype=module.dtype,
                           param_dtype=module.param_dtype)(x, train)
  return nn.relu(x)


def node_inputs(scale: int, step: int, depth: int) -> list[tuple[int, int]]:
  """The same-scale nodes concatenated into aggregation node X[scale][step].

  Besides these, every aggregation node (step >= 1) also takes the upsampled
  X[scale + 1][step - 1]. An intermediate node takes only its predecessor
  X[scale][step - 1] (a short connection, DLA's iterative aggregation); the
  last node of a scale (step == depth - scale) takes every earlier node of the
  scale: the encoder map and the first upsampling result come in by long
  connections (paper 002 sec. 3.1, see docs/dla_generator.md).
  """
  if step < 1 or scale + step > depth:
    raise ValueError(
        f"No aggregation node X[{scale}][{step}] at depth {depth}.")
  if step == depth - scale:
    return [(scale, k) for k in range(step)]
  return [(scale, step - 1)]


class DLAGenerator(nn.Module):
  """The DLA encoder-decoder generator: L in, ab out.

  Input [B, H, W, 1]: L / 50 - 1. Output [B, H, W, output_channels] in
  (-1, 1) through tanh: ab / 110. H and W must be divisible by
  2 ** (len(widths) - 1) (16 at the defaults).

  Attributes:
    widths: the block width of each scale, fine to coarse; paper 002 sec. 3.1:
      "four downsampling, so n is 64, 128, 256, 512, 512".
    output_channels: 2 (a and b).
    norm: 'batch' (the paper), 'instance' or 'none'.
    remat: recompute every block, downsampling and upsampling in the backward
      pass instead of keeping their intermediates from the forward pass.
      Same function, parameters and gradients; about a third more FLOPs per
      training step, for a fraction of the memory: the network keeps three
      maps per convolution at the full 64-320-channel width of its upper
      scales (conv output, its centred copy in batch norm, and the next
      convolution's input transposed for its weight gradient)
      (docs/benchmarks.md, "Every config on this CPU"). Without a
      `conv_backend` this is `nn.remat`, whose optimization barriers GPUs
      and TPUs keep (XLA:CPU removes them); with one, its `recompute`.
    dtype: compute dtype.
    param_dtype: parameter dtype.
    conv_backend: None (XLA's convolutions) or a backend's forms
      (layers.py): the transposed convolutions' forms and the
      recomputation's.
  """
  widths: tuple[int, ...] = (64, 128, 256, 512, 512)
  output_channels: int = 2
  norm: layers.NormKind = "batch"
  remat: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  conv_backend: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    layers.check_norm(self.norm)
    depth = len(self.widths) - 1
    if depth < 1:
      raise ValueError(f"widths={self.widths!r}; need at least two scales.")
    factor = 2 ** depth
    if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(
          f"DLAGenerator takes [B, H, W, C] with H and W divisible by {factor} "
          f"({depth} stride-2 downsamplings); got shape {tuple(x.shape)}.")
    kw = dict(norm=self.norm, dtype=self.dtype, param_dtype=self.param_dtype)

    def run(module: nn.Module, *inputs) -> jax.Array:
      if not self.remat:
        return module(*inputs, train)
      if self.conv_backend is None:
        return nn.remat(lambda m, *xs: m(*xs, train))(module, *inputs)
      return self.conv_backend.recompute(module, *inputs, train=train)

    nodes: dict[tuple[int, int], jax.Array] = {}
    # The encoder, X[i][0]; after each downsampling, at once, the aggregation
    # nodes it makes possible (paper: "up-sampling is performed after each
    # down-sampling"), from the scale above it up to full resolution, as each
    # node upsamples the one made just before it.
    for scale in range(depth + 1):
      if scale == 0:
        h = x
      else:
        h = run(Downsample(self.widths[scale], name=f"down_{scale}", **kw),
                nodes[(scale - 1, 0)])
      nodes[(scale, 0)] = run(
          ConvBlock(self.widths[scale], name=f"block_{scale}_0", **kw), h)
      for step in range(1, scale + 1):
        node_scale = scale - step
        up = run(Upsample(self.widths[node_scale],
                          name=f"up_{node_scale + 1}_{step - 1}",
                          conv_backend=self.conv_backend, **kw),
                 nodes[(node_scale + 1, step - 1)])
        fused = [nodes[key] for key in node_inputs(node_scale, step, depth)]
        nodes[(node_scale, step)] = run(
            ConvBlock(self.widths[node_scale],
                      name=f"block_{node_scale}_{step}", **kw),
            fused + [up])

    y = nn.Conv(self.output_channels, (1, 1), kernel_init=layers.conv_init,
                dtype=self.dtype, param_dtype=self.param_dtype,
                name="to_ab")(nodes[(0, depth)])
    return jnp.tanh(y)
