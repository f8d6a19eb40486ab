"""Convolutions in the forms XLA:CPU runs fast, with the same function and
parameters as XLA's own.

On XLA:CPU a stride-2 convolution's forward pass and its weight gradient
are fast, and so is a stride-1 convolution; an lhs-dilated convolution (the
input gradient of a stride-2 convolution, the forward pass of
`lax.conv_transpose`) is several times slower, and the weight gradient of a
stride-1 convolution whose window is the whole image (a phase
convolution's) slower again. And when a convolution's kernel covers more
positions than its input (the innermost U-Net levels: 2 x 2 inputs, 4 x 4
kernels), XLA swaps its operands into a far slower form. `CpuConvForms`
computes PyTorch's Conv2d(k, stride=2, padding=p) and ConvTranspose2d(k,
stride=2, padding=p) and chooses, for each pass, a fast form of the same
sums, using that each is the other's input gradient:

  strided conv     forward: strided conv         (patch product if small)
                   input gradient: phase convolutions (transposed conv of g)
                   weight gradient: strided conv's own (patch product if small)
  transposed conv  forward: phase convolutions   (tap product if few outputs)
                   input gradient: strided conv of g
                   weight gradient: x times g's patches (the adjoint
                                    strided conv's, with x as cotangent)

4 x 4 layers (padding 1) between enough channels, on a large enough grid,
take Winograd's minimal filtering (winograd.py) in all three passes
instead. The thresholds are the dataclass's fields; their defaults come
from whole-step measurements on a CPU (docs/benchmarks.md, the pix2pix
step's rounds; benchmarks/layer_forms.py reruns the layer-level ones).
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcolor.backends.xla_cpu import products
from jaxcolor.backends.xla_cpu import recompute
from jaxcolor.backends.xla_cpu import winograd
from jaxcolor.core.choices import CONV_DIMENSIONS


@dataclasses.dataclass(frozen=True)
class CpuConvForms:
  """The CPU's forms of the networks' convolutions, and where each applies.

  Hashable (frozen), so a Flax module holds it as a field and a custom VJP
  takes it as a static argument. Every form computes the same function of
  the same parameters as XLA's convolution; the products sum in another
  order (float32 rounding), Winograd's forms round differently again
  (about 1e-4 of the outputs' scale at most: tests/test_backends.py).

  Attributes:
    few_outputs: up to this many output channels, a transposed
      convolution's forward pass (and a strided convolution's input
      gradient) is one matrix product and shifted sums (`tap_products`):
      XLA:CPU runs a convolution with 2 outputs (every generator's ab
      layer) far slower than that product, and one with few outputs on a
      single thread.
    small_output: a stride-2 convolution with at most this many output
      positions (8 x 8) runs its forward pass as a product over patches,
      where XLA:CPU's convolution is slower.
    small_weight_gradient: one with at most this many output positions
      (4 x 4) runs its weight gradient as a product over patches too.
    few_inputs: with at most this many input channels (the photo's L*, the
      discriminator's L*a*b*) both passes take the patch product at every
      size: the patches are small, and XLA:CPU's convolution kernels run
      such inputs slower than the product.
    max_patches: the largest patch tensor (elements; 256 MiB in float32)
      that a transposed convolution's weight gradient builds; larger ones
      take the adjoint convolution's own gradient, to bound the memory.
    winograd_min_channels: 4 x 4 layers with at least this many input and
      output channels take Winograd's forms; below, the transforms cost
      more than the products they save.
    winograd_min_grid: stride-2 layers take them only with at least this
      many strided outputs on a side.
  """
  few_outputs: int = 64
  small_output: int = 64
  small_weight_gradient: int = 16
  few_inputs: int = 4
  max_patches: int = 1 << 26
  winograd_min_channels: int = 32
  winograd_min_grid: int = 16

  # -- What the networks' layers call -----------------------------------------

  def conv_stride2(self, x: jax.Array, kernel: jax.Array,
                   padding: int) -> jax.Array:
    """PyTorch's `Conv2d(k, stride=2, padding)`: [B, H, W, I] -> [B, H/2,
    W/2, O]. Needs kernel_size - 2 * padding == 2 and even H, W (exact
    halving), so that the input gradient is a transposed convolution."""
    return _conv_stride2(self, x, kernel, padding)

  def conv_transpose_stride2(self, x: jax.Array, kernel: jax.Array,
                             padding: int, output_padding: int) -> jax.Array:
    """PyTorch's `ConvTranspose2d(k, stride=2, padding, output_padding)`
    with k - 2 * padding + output_padding == 2: [B, H, W, I] -> [B, 2H, 2W,
    O], the kernel [k, k, I, O] in PyTorch's tap order."""
    return _conv_transpose_stride2(self, x, kernel, padding, output_padding)

  def conv_stride1(self, x: jax.Array, kernel: jax.Array,
                   padding: int) -> jax.Array:
    """A stride-1 convolution padded by `padding` on every side: Winograd's
    F(3 x 3, 4 x 4) for a float32 4 x 4 kernel between at least
    `winograd_min_channels` channels (a quarter of the products), XLA's
    convolution otherwise."""
    k, _, inputs, outputs = kernel.shape
    if (k == 4 and min(inputs, outputs) >= self.winograd_min_channels
        and min(x.shape[1:3]) + 2 * padding >= k
        and kernel.dtype == jnp.float32):
      return winograd.correlate(x, kernel, padding)
    return lax.conv_general_dilated(
        x, kernel, (1, 1), ((padding, padding), (padding, padding)),
        dimension_numbers=CONV_DIMENSIONS)

  def recompute(self, module: nn.Module, *inputs: Any, train: bool) -> Any:
    """`module(*inputs, train)` recomputed in the backward pass, in the form
    that holds on XLA:CPU (`recompute.recompute_in_backward`)."""
    return recompute.recompute_in_backward(module, *inputs, train=train)

  # -- The passes' forms ------------------------------------------------------

  def takes_winograd(self, kernel: jax.Array, padding: int, grid: int) -> bool:
    """Whether a stride-2 layer takes Winograd's forms: `grid` is the side
    of the strided convolution's output (a transposed layer's input). Only
    in float32: in bfloat16 the transforms' rounding would cost more than
    a direct convolution's."""
    k, _, inputs, outputs = kernel.shape
    return (k == 4 and padding == 1 and grid >= self.winograd_min_grid
            and min(inputs, outputs) >= self.winograd_min_channels
            and kernel.dtype == jnp.float32)

  def strided_forward(self, x: jax.Array, kernel: jax.Array,
                      pads: tuple[int, int]) -> jax.Array:
    """Stride-2 convolution, padding `pads` (low, high): XLA's, or a matrix
    product over the patches where the output is small or the input has
    few channels, or over the whole input for one output pixel."""
    k = kernel.shape[0]
    height, width, channels = x.shape[1:]
    rows, cols = products.strided_output_size(x.shape, k, pads)
    if rows == cols == 1 and pads[0] + max(height, width) <= k:
      return products.one_pixel_strided(x, kernel, pads[0])
    if rows * cols > self.small_output and channels > self.few_inputs:
      return products.strided(x, kernel, pads)
    return products.patch_product(x, kernel, pads)

  def strided_weight_gradient(self, x: jax.Array, grad: jax.Array, k: int,
                              pads: tuple[int, int]) -> jax.Array:
    """d/dkernel of the stride-2 convolution of `x` pulled back from `grad`."""
    rows, cols = grad.shape[1:3]
    if rows * cols <= self.small_weight_gradient or (
        x.shape[-1] <= self.few_inputs):
      return products.patch_weight_gradient(x, grad, k, pads)
    return products.conv_weight_gradient(x, grad, k, pads)

  def transposed_forward(self, x: jax.Array, kernel: jax.Array,
                         padding: int) -> jax.Array:
    """Transposed stride-2 convolution, [B, H, W, I] -> [B, 2H, 2W, O],
    with no lhs dilation: phase convolutions, or the tap product for few
    outputs or an input smaller than the kernel."""
    k = kernel.shape[0]
    height, width = x.shape[1:3]
    if height == width == 1:
      return products.one_pixel_transposed(x, kernel, padding)
    if kernel.shape[-1] <= self.few_outputs or height * width < k * k:
      return products.tap_products(x, kernel, padding)
    return products.phase_convolutions(x, kernel, padding)

  def adjoint_weight_gradient(self, grad: jax.Array, x: jax.Array, k: int,
                              pads: tuple[int, int]) -> jax.Array:
    """The weight gradient of a transposed convolution of `x` pulled back
    from `grad`, [k, k, I, O]: the patch product
    (`products.adjoint_patch_weight_gradient`), the faster form with the
    optimizer's read of it counted, up to `max_patches`."""
    patches_size = (grad.shape[0] * x.shape[1] * x.shape[2] * k * k
                    * grad.shape[-1])
    if patches_size > self.max_patches:
      return products.swap_io(self.strided_weight_gradient(grad, x, k, pads))
    return products.adjoint_patch_weight_gradient(grad, x, k, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _conv_stride2(forms: CpuConvForms, x: jax.Array, kernel: jax.Array,
                  padding: int) -> jax.Array:
  if forms.takes_winograd(kernel, padding, min(x.shape[1:3]) // 2):
    return winograd.strided(x, kernel)
  return forms.strided_forward(x, kernel, (padding, padding))


def _conv_stride2_forward(forms, x, kernel, padding):
  return _conv_stride2(forms, x, kernel, padding), (x, kernel)


def _conv_stride2_backward(forms, padding, residuals, grad):
  x, kernel = residuals
  if forms.takes_winograd(kernel, padding, min(x.shape[1:3]) // 2):
    return (winograd.strided_input_gradient(grad, kernel).astype(x.dtype),
            winograd.strided_weight_gradient(x, grad).astype(kernel.dtype))
  grad_x = forms.transposed_forward(grad, products.swap_io(kernel), padding)
  grad_kernel = forms.strided_weight_gradient(x, grad, kernel.shape[0],
                                              (padding, padding))
  return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


_conv_stride2.defvjp(_conv_stride2_forward, _conv_stride2_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4))
def _conv_transpose_stride2(forms: CpuConvForms, x: jax.Array,
                            kernel: jax.Array, padding: int,
                            output_padding: int) -> jax.Array:
  del output_padding  # Only the output size depends on it: exactly 2H here.
  if forms.takes_winograd(kernel, padding, min(x.shape[1:3])):
    return winograd.strided_input_gradient(x, products.swap_io(kernel))
  return forms.transposed_forward(x, kernel, padding)


def _conv_transpose_stride2_forward(forms, x, kernel, padding, output_padding):
  return (_conv_transpose_stride2(forms, x, kernel, padding, output_padding),
          (x, kernel))


def _conv_transpose_stride2_backward(forms, padding, output_padding,
                                     residuals, grad):
  x, kernel = residuals
  if forms.takes_winograd(kernel, padding, min(x.shape[1:3])):
    grad_x = winograd.strided(grad, products.swap_io(kernel))
    grad_kernel = products.swap_io(winograd.strided_weight_gradient(grad, x))
    return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)
  pads = products.transposed_pads(padding, output_padding)
  grad_x = forms.strided_forward(grad, products.swap_io(kernel), pads)
  grad_kernel = forms.adjoint_weight_gradient(grad, x, kernel.shape[0], pads)
  return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


_conv_transpose_stride2.defvjp(_conv_transpose_stride2_forward,
                               _conv_transpose_stride2_backward)
