"""The global + local colorization network of Iizuka, Simo-Serra and Ishikawa,
"Let there be Color!" (SIGGRAPH 2016; paper 004 sec. 4 summarises it).

Five parts: a low-level feature network shared by two paths; a mid-level
network on the image itself (local path); a global feature network on the
low-level features of a fixed-size copy of the image (global path); a fusion
layer that appends the global vector to every local feature; and a
colorization network that decodes to chrominance. A classification head on
the global features is trained jointly (scene labels) so that the global
vector carries scene context (paper 004 sec. 4.1).

"Table 1" is the original's layer table; "sec." names its subsections of
section 3 by title, e.g. "Fusing Global and Local Features".
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcolor.models import layers

Dtype = Any

# Initializers: He et al. (2015) normal, N(0, 2 / fan_in), for the layers
# followed by a ReLU; Glorot (Xavier) uniform for the sigmoid output and the
# class logits, which have no ReLU behind them. Biases start at 0. Fans as in
# Flax: fan_in = kh * kw * in, fan_out = kh * kw * out (Dense: in, out).
# Both draw a flat vector and reshape it (the same distribution) because
# XLA:CPU compiles rank-4 random draws several times more slowly than flat
# ones, which Flax's he_normal and glorot_uniform draw.


def relu_init(key: jax.Array, shape: tuple[int, ...],
              dtype: Dtype = jnp.float32) -> jax.Array:
  std = math.sqrt(2.0 / math.prod(shape[:-1]))
  flat = jax.random.normal(key, (math.prod(shape),), dtype)
  return (std * flat).reshape(shape)


def linear_init(key: jax.Array, shape: tuple[int, ...],
                dtype: Dtype = jnp.float32) -> jax.Array:
  fan_in = math.prod(shape[:-1])
  fan_out = math.prod(shape[:-2]) * shape[-1]
  limit = math.sqrt(6.0 / (fan_in + fan_out))
  flat = jax.random.uniform(key, (math.prod(shape),), dtype, -limit, limit)
  return flat.reshape(shape)


# The low-level network halves the side three times (strides 2, 1, 2, 1, 2, 1).
_LOW_LEVEL_FACTOR = 8


class ConvBNReLU(nn.Module):
  """A 3x3 convolution, batch norm and ReLU (Table 1's unit).

  Padding is one pixel on each side (PyTorch `padding=1`), so a stride-1
  layer keeps the size and a stride-2 layer halves an even side exactly.
  No bias: the batch norm's offset takes its place.
  """
  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, (3, 3), strides=(self.strides, self.strides),
                padding=((1, 1), (1, 1)), use_bias=False,
                kernel_init=relu_init, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(x)
    x = layers.Normalization("batch", dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             name="norm")(x, train)
    return nn.relu(x)


class DenseBNReLU(nn.Module):
  """A fully connected layer, batch norm and ReLU (global net, classifier)."""
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Dense(self.features, use_bias=False, kernel_init=relu_init,
                 dtype=self.dtype, param_dtype=self.param_dtype,
                 name="dense")(x)
    x = layers.Normalization("batch", dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             name="norm")(x, train)
    return nn.relu(x)


class LowLevelFeatures(nn.Module):
  """Six 3x3 convolutions, strides 2, 1, 2, 1, 2, 1 (Table 1).

  [B, H, W, 1] -> [B, H/8, W/8, 8 * width]. Widths 64, 128, 128, 256, 256,
  512 at width=64. Strided convolutions, not pooling, reduce the size
  (paper 004 sec. 4.1).
  """
  width: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    w = self.width
    spec = ((w, 2), (2 * w, 1), (2 * w, 2), (4 * w, 1), (4 * w, 2), (8 * w, 1))
    for i, (features, strides) in enumerate(spec, start=1):
      x = ConvBNReLU(features, strides, dtype=self.dtype,
                     param_dtype=self.param_dtype, name=f"conv{i}")(x, train)
    return x


class MidLevelFeatures(nn.Module):
  """Two 3x3 stride-1 convolutions, 512 then 256 (Table 1).

  [B, H/8, W/8, 8 * width] -> [B, H/8, W/8, 4 * width].
  """
  width: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i, features in enumerate((8 * self.width, 4 * self.width), start=1):
      x = ConvBNReLU(features, 1, dtype=self.dtype,
                     param_dtype=self.param_dtype, name=f"conv{i}")(x, train)
    return x


class GlobalFeatures(nn.Module):
  """Four 3x3 convolutions and three fully connected layers (Table 1).

  [B, S/8, S/8, 8 * width] low-level features of the S x S copy (S = 224:
  28 x 28 x 512) -> convolutions 512/2, 512/1, 512/2, 512/1 (7 x 7 x 512) ->
  flatten -> FC 1024 -> FC 512 -> FC 256.

  Returns:
    (global_vector [B, 4 * width], the 512-d FC output [B, 8 * width]). The
    first goes to the fusion layer; the second, one layer earlier, feeds the
    classification head, as in the original ("Colorization with
    Classification").
  """
  width: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    w = self.width
    for i, strides in enumerate((2, 1, 2, 1), start=1):
      x = ConvBNReLU(8 * w, strides, dtype=self.dtype,
                     param_dtype=self.param_dtype, name=f"conv{i}")(x, train)
    x = x.reshape(x.shape[0], -1)
    x = DenseBNReLU(16 * w, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="fc1")(x, train)
    class_features = DenseBNReLU(8 * w, dtype=self.dtype,
                                 param_dtype=self.param_dtype,
                                 name="fc2")(x, train)
    global_vector = DenseBNReLU(4 * w, dtype=self.dtype,
                                param_dtype=self.param_dtype,
                                name="fc3")(class_features, train)
    return global_vector, class_features


class ColorizationNetwork(nn.Module):
  """Fusion layer, then convolutions and x2 nearest-neighbour upsampling.

  Fusion ("Fusing Global and Local Features"): y = ReLU(b + W [global; mid])
  at every location, a 1x1 convolution from 256 + 256 to 256 channels with
  a bias and, as in that equation, no batch norm. Decoder (Table 1): conv
  128, upsample, conv 64, conv 64, upsample, conv 32, conv 2 with a sigmoid
  ("Colorization Network"; paper 004 sec. 4.2: the output is half the input
  size).

  [B, H/8, W/8, 4 * width] and [B, 4 * width] -> [B, H/2, W/2, 2] in (0, 1),
  the original's sigmoid output.
  """
  width: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, mid: jax.Array, global_vector: jax.Array,
               train: bool) -> jax.Array:
    w = self.width
    batch, rows, cols, _ = mid.shape
    tiled = jnp.broadcast_to(global_vector[:, None, None, :].astype(mid.dtype),
                             (batch, rows, cols, global_vector.shape[-1]))
    x = jnp.concatenate([tiled, mid], axis=-1)
    x = nn.Conv(4 * w, (1, 1), kernel_init=relu_init, dtype=self.dtype,
                param_dtype=self.param_dtype, name="fusion")(x)
    x = nn.relu(x)

    def unit(features: int, name: str) -> ConvBNReLU:
      return ConvBNReLU(features, 1, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=name)

    x = unit(2 * w, "conv1")(x, train)
    x = _upsample_nearest(x)
    x = unit(w, "conv2")(x, train)
    x = unit(w, "conv3")(x, train)
    x = _upsample_nearest(x)
    x = unit(w // 2, "conv4")(x, train)
    x = nn.Conv(2, (3, 3), padding=((1, 1), (1, 1)), kernel_init=linear_init,
                dtype=self.dtype, param_dtype=self.param_dtype,
                name="output")(x)
    return nn.sigmoid(x)


class ClassificationHead(nn.Module):
  """The scene classifier: FC 256 (batch norm, ReLU), then FC num_classes.

  [B, 8 * width] -> logits [B, num_classes] ("Colorization with
  Classification").
  """
  num_classes: int
  width: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = DenseBNReLU(4 * self.width, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="fc1")(x, train)
    return nn.Dense(self.num_classes, kernel_init=linear_init,
                    dtype=self.dtype, param_dtype=self.param_dtype,
                    name="logits")(x)


def _upsample_nearest(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C], each value repeated 2 x 2.

  The original's upsampling layers are nearest-neighbour ("Colorization
  Network").
  """
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class IizukaColorizer(nn.Module):
  """The joint global/local colorization and classification network.

  `apply(variables, lightness, train=...)` with lightness = L / 50 - 1,
  [B, H, W, 1], H and W multiples of 8, returns the tuple

    (ab [B, H, W, 2] in [-1, 1], class_logits [B, num_classes] or None).

  Output scale: the original ends in a sigmoid and trains against a*b*
  normalized to [0, 1] ("Colorization Network"); its released colorize.lua
  maps that output o to ab = (2 o - 1) * 100. Here the module returns 2 o - 1 =
  tanh(z / 2) directly, the codebase's tanh range, read as ab / 110 like
  every other generator. (ab + 1) / 2 recovers the sigmoid output exactly.
  An error on this [-1, 1] scale is twice that on the [0, 1] scale, so an
  MSE here is 4x the original's: its classification weight alpha = 1/300
  against a [0, 1] MSE corresponds to alpha = 4/300 against an MSE on this
  scale (same ab normalization constant assumed; 100 there, 110 here).

  Output size: the colorization network ends at half the input size
  (paper 004 sec. 4.2); the module then upsamples bilinearly to the input
  size (the released colorize.lua rescales the chrominance with Torch's
  image.scale, bilinear by default). The paper instead compared, in
  training, with the target downscaled to the output size; a loss on the
  full-size output here differs from that by the bilinear upsampling only.

  Global path: the input is resized to global_size x global_size
  (bilinear, antialiased) and passed through the SAME low-level network
  (one set of weights, applied twice), so the global vector does not
  depend on the input size and any size can be colorized (the original's
  released colorize.lua feeds a 224 x 224 rescale and the image itself).
  When the input already has that size, the resize is the identity and the
  low-level features are computed once and used by both paths (equal
  values, half the low-level cost, one batch-norm statistics update).
  Otherwise the shared batch norms update their running statistics twice
  per training step, once per path.

  Classification ("Colorization with Classification"): logits from FC 256
  -> FC num_classes on the global network's 512-d layer; num_classes=0
  builds no head and returns None for the logits (the color-only ablation;
  the training loss must then skip its classification term).

  Attributes:
    num_classes: scene classes (365 for places365_small; the original used
      Places' 205). 0 disables the classification head.
    global_size: side of the square copy seen by the global path (224, the
      training size of the original). A multiple of 8.
    width: channels of the first low-level convolution; every other layer
      is a fixed multiple of it (Table 1 at width=64). Smaller values make
      test-sized variants. Even.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  num_classes: int = 365
  global_size: int = 224
  width: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.num_classes < 0:
      raise ValueError(f"num_classes={self.num_classes}; must be >= 0.")
    if self.width < 2 or self.width % 2:
      raise ValueError(f"width={self.width}; must be an even number >= 2.")
    if (self.global_size < _LOW_LEVEL_FACTOR
        or self.global_size % _LOW_LEVEL_FACTOR):
      raise ValueError(
          f"global_size={self.global_size}; must be a positive multiple of "
          f"{_LOW_LEVEL_FACTOR}.")
    kw = dict(width=self.width, dtype=self.dtype, param_dtype=self.param_dtype)
    self.low_level = LowLevelFeatures(**kw)
    self.mid_level = MidLevelFeatures(**kw)
    self.global_level = GlobalFeatures(**kw)
    self.colorization = ColorizationNetwork(**kw)
    if self.num_classes:
      self.classifier = ClassificationHead(self.num_classes, **kw)

  def __call__(self, x: jax.Array,
               train: bool) -> tuple[jax.Array, jax.Array | None]:
    """[B, H, W, 1] -> (ab [B, H, W, 2], logits [B, num_classes] or None)."""
    _check_input(x)
    low = self.low_level(x, train)
    global_vector, class_features = self._global_path(x, train, low)
    mid = self.mid_level(low, train)
    unit_ab = self.colorization(mid, global_vector, train)  # [B, H/2, W/2, 2]
    ab = 2.0 * unit_ab - 1.0
    batch, height, width, _ = x.shape
    ab = jax.image.resize(ab, (batch, height, width, 2), method="bilinear")
    logits = None
    if self.num_classes:
      logits = self.classifier(class_features, train)
    return ab, logits

  def global_features(self, x: jax.Array, train: bool) -> jax.Array:
    """The global vector [B, 4 * width] (256 at width 64) of [B, H, W, 1].

    Use with `apply(..., method=IizukaColorizer.global_features)`.
    """
    _check_input(x)
    return self._global_path(x, train)[0]

  def _global_path(self, x: jax.Array, train: bool,
                   low: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    batch, height, width, channels = x.shape
    if low is None or (height, width) != (self.global_size, self.global_size):
      small = jax.image.resize(
          x, (batch, self.global_size, self.global_size, channels),
          method="bilinear", antialias=True)
      low = self.low_level(small, train)
    return self.global_level(low, train)


def _check_input(x: jax.Array) -> None:
  if (x.ndim != 4 or x.shape[-1] != 1 or x.shape[1] % _LOW_LEVEL_FACTOR
      or x.shape[2] % _LOW_LEVEL_FACTOR or not x.shape[1] or not x.shape[2]):
    raise ValueError(
        f"IizukaColorizer takes lightness [B, H, W, 1] with H and W positive "
        f"multiples of {_LOW_LEVEL_FACTOR} (three stride-2 layers, then two "
        f"x2 upsamplings and one to full size); got shape {tuple(x.shape)}.")
