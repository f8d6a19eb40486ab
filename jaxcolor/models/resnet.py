"""ResNet-18 in torchvision's layout: the ImageNet classifier and its body.

The body is the encoder of the ResNet-18 U-Net generator (resnet_unet.py):
Paper 001 (section 3.3) and paper 003 (section 6.5) start the generator's
down-sampling path from ImageNet-pretrained ResNet-18 weights, so the layers,
padding and parameter names follow torchvision's `resnet18` exactly and its
state dict converts one to one (torchvision_import.py):

  torchvision                      Flax (ResNet18 variables)
  conv1.weight                     params/body/conv1/kernel
  bn1.{weight,bias}                params/body/bn1/{scale,bias}
  bn1.{running_mean,running_var}   batch_stats/body/bn1/{mean,var}
  layer2.0.conv1.weight            params/body/layer2_0/conv1/kernel
  layer2.0.downsample.0.weight     params/body/layer2_0/downsample_0/kernel
  layer2.0.downsample.1.weight     params/body/layer2_0/downsample_1/scale
  fc.{weight,bias}                 params/fc/{kernel,bias}

Initialization is torchvision's (`ResNet.__init__`): convolutions Kaiming
normal with fan_out and the ReLU gain (std = sqrt(2 / (out * kh * kw))),
batch-norm scale 1 and offset 0; the classifier keeps PyTorch's `nn.Linear`
default, U(-1/sqrt(in), 1/sqrt(in)) for weight and bias. Batch norm uses
PyTorch's defaults (momentum 0.1, i.e. Flax momentum 0.9; epsilon 1e-5).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), an
# untruncated normal.
resnet_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_linear_bias_init(fan_in: int):
  """PyTorch's `nn.Linear`/`nn.Conv2d` default bias: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / fan_in ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# PyTorch's default weight init, kaiming_uniform_(a=sqrt(5)), is
# U(+-1/sqrt(fan_in)): variance 1/(3 fan_in).
torch_default_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform")

STAGE_BLOCKS = (2, 2, 2, 2)


def _batch_norm(train: bool, dtype: Dtype, param_dtype: Dtype,
                name: str) -> nn.BatchNorm:
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5,
      dtype=dtype, param_dtype=param_dtype, name=name)


def _conv(features: int, kernel: int, stride: int, dtype: Dtype,
          param_dtype: Dtype, name: str) -> nn.Conv:
  # Explicit symmetric padding as PyTorch's `padding=kernel // 2`: Flax's
  # 'SAME' pads (2, 3) for a 7x7 stride-2 conv on even sizes and would shift
  # every feature map by one pixel against the pretrained weights.
  pad = kernel // 2
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((pad, pad), (pad, pad)), use_bias=False,
      kernel_init=resnet_conv_init, dtype=dtype, param_dtype=param_dtype,
      name=name)


class BasicBlock(nn.Module):
  """torchvision's `BasicBlock`: two 3x3 convs with an identity shortcut.

  The first conv carries the stride; where the stride or width changes the
  shortcut is a 1x1 conv + batch norm (`downsample.0`, `downsample.1`).

  Attributes:
    features: output channels.
    stride: 1, or 2 at the first block of stages 2-4.
  """
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, C] -> [B, H / stride, W / stride, features]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = _conv(self.features, 3, self.stride, name="conv1", **kw)(x)
    y = nn.relu(_batch_norm(train, name="bn1", **kw)(y))
    y = _conv(self.features, 3, 1, name="conv2", **kw)(y)
    y = _batch_norm(train, name="bn2", **kw)(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.stride, name="downsample_0", **kw)(x)
      x = _batch_norm(train, name="downsample_1", **kw)(x)
    return nn.relu(y + x)


class ResNet18Body(nn.Module):
  """ResNet-18 without its pooling and classifier: the U-Net encoder.

  Attributes:
    base_features: width of the stem and first stage; the stages have
      (1, 2, 4, 8) times as many channels. 64 is torchvision's ResNet-18 and
      the only width its weights fit; smaller values give cheap test variants.
  """
  base_features: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    """Feature maps at every resolution.

    Args:
      x: [B, H, W, C] images.
      train: batch statistics (and their running update) when True.

    Returns:
      Five maps at strides 2, 4, 8, 16, 32: the stem after its ReLU (before
      the max pool) [B, H/2, W/2, F], then the outputs of stages 1-4,
      [B, H/4, W/4, F], [B, H/8, W/8, 2F], [B, H/16, W/16, 4F],
      [B, H/32, W/32, 8F], with F = base_features.
    """
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = _conv(self.base_features, 7, 2, name="conv1", **kw)(x)
    x = nn.relu(_batch_norm(train, name="bn1", **kw)(x))
    features = [x]
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(STAGE_BLOCKS):
      width = self.base_features * 2 ** stage
      for block in range(num_blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(width, stride, name=f"layer{stage + 1}_{block}",
                       **kw)(x, train)
      features.append(x)
    return features


class ResNet18(nn.Module):
  """The ResNet-18 ImageNet classifier (11,689,512 parameters at defaults).

  Attributes:
    num_classes: classifier outputs (1000 for ImageNet).
    input_channels: channels of `x` (3 for RGB; 1 for a lightness-only
      classifier). Checked against the input so that parameter shapes always
      match what the weight converter and the U-Net encoder expect.
    base_features: see `ResNet18Body`.
  """
  num_classes: int = 1000
  input_channels: int = 3
  base_features: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, input_channels] -> logits [B, num_classes]."""
    if x.shape[-1] != self.input_channels:
      raise ValueError(
          f"ResNet18(input_channels={self.input_channels}) got an input with "
          f"{x.shape[-1]} channels (shape {x.shape}).")
    features = ResNet18Body(self.base_features, dtype=self.dtype,
                            param_dtype=self.param_dtype, name="body")(x, train)
    pooled = jnp.mean(features[-1], axis=(1, 2))
    fan_in = pooled.shape[-1]
    return nn.Dense(
        self.num_classes, kernel_init=torch_default_kernel_init,
        bias_init=torch_linear_bias_init(fan_in), dtype=self.dtype,
        param_dtype=self.param_dtype, name="fc")(pooled)
