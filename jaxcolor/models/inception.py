"""The Inception-v3 of FID: 2048-d pool features, as pytorch-fid computes them.

FID (Heusel et al. 2017) is defined on the pool_3 features of the TensorFlow
Inception graph `inception-2015-12-05`. pytorch-fid ported that graph's
weights to PyTorch (`pt_inception-2015-12-05-6726825d.pth`) on torchvision's
Inception3 with four blocks patched to behave like the TensorFlow graph; this
module has the same layers and names, so that file converts one to one
(jaxcolor/evaluation/fid.py). The differences from torchvision's InceptionV3, all from
the TensorFlow graph:

  - the 3x3 average pools inside the A, C and E blocks divide by the number of
    real (unpadded) inputs (`count_include_pad=False`): TensorFlow's
    average pool ignores padding;
  - the last E block (Mixed_7c) pools its fourth branch with a 3x3 max pool
    instead of an average pool;
  - 1008 classes, no auxiliary classifier (neither is used here: features
    stop at the global average pool).

Input: RGB in [0, 1], [B, H, W, 3]; resized to 299 x 299 bilinearly (half-pixel
centers, no antialiasing: PyTorch's `interpolate(align_corners=False)`), then
scaled to [-1, 1]. Every convolution is bias-free and followed by batch norm
(epsilon 1e-3) and ReLU. Parameter names follow the PyTorch state dict:
`Mixed_6b/branch7x7_2/conv/kernel` is `Mixed_6b.branch7x7_2.conv.weight`.

Without the resize the network takes any input of at least 75 x 75 (the
smallest size its strided layers leave a 1 x 1 map at the end).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

INPUT_SIZE = 299
MIN_INPUT_SIZE = 75
FEATURE_DIM = 2048
# torchvision's BasicConv2d: BatchNorm2d(eps=0.001).
_BN_EPSILON = 1e-3


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """[B, H, W, C] -> [B, size, size, C], PyTorch's bilinear resize.

  `F.interpolate(mode='bilinear', align_corners=False)` samples with
  half-pixel centers and, unlike `jax.image.resize`'s default, no
  antialiasing when it shrinks: pytorch-fid resizes that way.
  """
  batch, _, _, channels = images.shape
  return jax.image.resize(images, (batch, size, size, channels), "linear",
                          antialias=False)


class BasicConv(nn.Module):
  """Convolution (no bias) + batch norm + ReLU: torchvision's BasicConv2d."""
  features: int
  kernel_size: int | Sequence[int]
  strides: int = 1
  padding: int | Sequence[int] = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    pad_h, pad_w = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel_size),
                strides=_pair(self.strides),
                padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False,
                dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, epsilon=_BN_EPSILON,
                     momentum=0.9, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # TensorFlow's average pool ignores padding (pytorch-fid's patch).
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class _Block(nn.Module):
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def conv(self, name: str, features: int, kernel_size, **kwargs) -> BasicConv:
    return BasicConv(features, kernel_size, dtype=self.dtype,
                     param_dtype=self.param_dtype, name=name, **kwargs)


class InceptionA(_Block):
  """35 x 35 block (Mixed_5b-d)."""
  pool_features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b1 = self.conv("branch1x1", 64, 1)(x, train)
    b5 = self.conv("branch5x5_1", 48, 1)(x, train)
    b5 = self.conv("branch5x5_2", 64, 5, padding=2)(b5, train)
    b3 = self.conv("branch3x3dbl_1", 64, 1)(x, train)
    b3 = self.conv("branch3x3dbl_2", 96, 3, padding=1)(b3, train)
    b3 = self.conv("branch3x3dbl_3", 96, 3, padding=1)(b3, train)
    bp = self.conv("branch_pool", self.pool_features, 1)(_avg_pool_3x3(x), train)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """35 -> 17 reduction (Mixed_6a)."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b3 = self.conv("branch3x3", 384, 3, strides=2)(x, train)
    bd = self.conv("branch3x3dbl_1", 64, 1)(x, train)
    bd = self.conv("branch3x3dbl_2", 96, 3, padding=1)(bd, train)
    bd = self.conv("branch3x3dbl_3", 96, 3, strides=2)(bd, train)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(_Block):
  """17 x 17 block with factorised 7 x 7 convolutions (Mixed_6b-e)."""
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c7 = self.channels_7x7
    b1 = self.conv("branch1x1", 192, 1)(x, train)
    b7 = self.conv("branch7x7_1", c7, 1)(x, train)
    b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7, train)
    b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7, train)
    bd = self.conv("branch7x7dbl_1", c7, 1)(x, train)
    bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd, train)
    bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd, train)
    bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd, train)
    bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd, train)
    bp = self.conv("branch_pool", 192, 1)(_avg_pool_3x3(x), train)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """17 -> 8 reduction (Mixed_7a)."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b3 = self.conv("branch3x3_1", 192, 1)(x, train)
    b3 = self.conv("branch3x3_2", 320, 3, strides=2)(b3, train)
    b7 = self.conv("branch7x7x3_1", 192, 1)(x, train)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7, train)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7, train)
    b7 = self.conv("branch7x7x3_4", 192, 3, strides=2)(b7, train)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(_Block):
  """8 x 8 block with split 1x3 / 3x1 outputs (Mixed_7b, Mixed_7c).

  `max_pool`: the TensorFlow graph's Mixed_7c pools its last branch with a
  max pool (pytorch-fid's FIDInceptionE_2); Mixed_7b averages.
  """
  max_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b1 = self.conv("branch1x1", 320, 1)(x, train)
    b3 = self.conv("branch3x3_1", 384, 1)(x, train)
    b3 = jnp.concatenate([
        self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3, train),
        self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3, train),
    ], axis=-1)
    bd = self.conv("branch3x3dbl_1", 448, 1)(x, train)
    bd = self.conv("branch3x3dbl_2", 384, 3, padding=1)(bd, train)
    bd = jnp.concatenate([
        self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd, train),
        self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd, train),
    ], axis=-1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = self.conv("branch_pool", 192, 1)(pooled, train)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """RGB [B, H, W, 3] in [0, 1] -> pool features [B, 2048] (float32).

  Attributes:
    resize_input: resize to 299 x 299 first, as FID requires (False only for
      tests at small sizes; inputs must then be at least 75 x 75).
  """
  resize_input: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = jnp.asarray(x, jnp.float32)
    if self.resize_input:
      x = resize_bilinear(x, INPUT_SIZE)
    elif min(x.shape[1:3]) < MIN_INPUT_SIZE:
      raise ValueError(f"FIDInceptionV3 needs inputs of at least "
                       f"{MIN_INPUT_SIZE} x {MIN_INPUT_SIZE}; got {x.shape}.")
    x = (2.0 * x - 1.0).astype(self.dtype)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = BasicConv(32, 3, strides=2, name="Conv2d_1a_3x3", **kw)(x, train)
    x = BasicConv(32, 3, name="Conv2d_2a_3x3", **kw)(x, train)
    x = BasicConv(64, 3, padding=1, name="Conv2d_2b_3x3", **kw)(x, train)
    x = _max_pool_3x3_stride2(x)
    x = BasicConv(80, 1, name="Conv2d_3b_1x1", **kw)(x, train)
    x = BasicConv(192, 3, name="Conv2d_4a_3x3", **kw)(x, train)
    x = _max_pool_3x3_stride2(x)
    x = InceptionA(pool_features=32, name="Mixed_5b", **kw)(x, train)
    x = InceptionA(pool_features=64, name="Mixed_5c", **kw)(x, train)
    x = InceptionA(pool_features=64, name="Mixed_5d", **kw)(x, train)
    x = InceptionB(name="Mixed_6a", **kw)(x, train)
    x = InceptionC(channels_7x7=128, name="Mixed_6b", **kw)(x, train)
    x = InceptionC(channels_7x7=160, name="Mixed_6c", **kw)(x, train)
    x = InceptionC(channels_7x7=160, name="Mixed_6d", **kw)(x, train)
    x = InceptionC(channels_7x7=192, name="Mixed_6e", **kw)(x, train)
    x = InceptionD(name="Mixed_7a", **kw)(x, train)
    x = InceptionE(max_pool=False, name="Mixed_7b", **kw)(x, train)
    x = InceptionE(max_pool=True, name="Mixed_7c", **kw)(x, train)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
