"""Tests of the DLA generator, the DCGAN discriminator and the MLP Improver.

Full-size parameter counts use `jax.eval_shape`, so nothing is computed; the
expected counts are recomputed here from the architecture spec (paper 002
sec. 3.1 and Table 1, paper 000 sec. 3.3), not read from the models.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_config

from jaxcolor import models
from jaxcolor.backends.xla_cpu import CpuConvForms
from jaxcolor.models import dcgan, dla, improver

TINY_DLA = (4, 8, 8, 16, 16)
TINY_D = (4, 8, 8, 16)


def count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def abstract_variables(module, shape):
  return jax.eval_shape(
      lambda: module.init(jax.random.PRNGKey(0), jnp.zeros(shape),
                          train=False))


def filled_variables(module, shape, seed=0):
  """Variables of the right structure filled from NumPy: He-scaled kernels,
  batch norm at its initial state. XLA:CPU compiles `module.init`'s threefry
  draws slowly (tens of seconds for a few dozen kernels), so only tests about
  the initializers themselves call `init`.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape)
    elif name in ("scale", "var"):
      value = np.ones(leaf.shape)
    else:  # bias, mean
      value = rng.normal(0.0, 0.1, leaf.shape) if name == "bias" else (
          np.zeros(leaf.shape))
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(
      fill, abstract_variables(module, shape))


def output_shape(module, variables, shape, **kwargs):
  return jax.eval_shape(
      lambda v: module.apply(v, jnp.zeros(shape), train=False, **kwargs),
      variables).shape


def apply_both_modes(module, variables, x):
  """(eval output, eval-mode batch_stats, train-mode batch_stats), one jit."""

  @jax.jit
  def run(variables, x):
    y, eval_state = module.apply(variables, x, train=False,
                                 mutable=["batch_stats"])
    _, train_state = module.apply(variables, x, train=True,
                                  mutable=["batch_stats"])
    return y, eval_state["batch_stats"], train_state["batch_stats"]

  return run(variables, x)


def assert_batch_stats_move_only_in_train_mode(before, in_eval, in_train):
  before = jax.tree.leaves(before)
  assert all(np.array_equal(a, b)
             for a, b in zip(before, jax.tree.leaves(in_eval)))
  assert all(not np.array_equal(a, b)
             for a, b in zip(before, jax.tree.leaves(in_train)))


def conv_params(k, c_in, c_out, batch_norm):
  # A convolution followed by batch norm has no bias, and BN has scale+offset.
  return k * k * c_in * c_out + (2 * c_out if batch_norm else c_out)


# --------------------------------------------------------------------------
# DLA generator


def dla_param_count(widths, in_channels=1, out_channels=2):
  """Sec. 3.1: blocks of three 3x3 conv+BN, 4x4 stride-2 down and up convs.

  Nodes X[i][j] for i + j <= depth; an intermediate aggregation node takes
  its predecessor and one upsampled map, the last one of a scale takes every
  earlier node of the scale and the upsampled map.
  """
  depth = len(widths) - 1

  def block(c_in, w):
    return conv_params(3, c_in, w, True) + 2 * conv_params(3, w, w, True)

  total = block(in_channels, widths[0])
  for i in range(1, depth + 1):
    total += conv_params(4, widths[i - 1], widths[i], True)   # downsampling
    total += block(widths[i], widths[i])                      # X[i][0]
  for i in range(depth):
    for j in range(1, depth - i + 1):
      total += conv_params(4, widths[i + 1], widths[i], True)  # upsampling
      same_scale = j if j == depth - i else 1
      total += block((same_scale + 1) * widths[i], widths[i])
  return total + widths[0] * out_channels + out_channels      # 1x1 head


def test_dla_param_count_at_defaults():
  module = models.build("dla")
  variables = abstract_variables(module, (1, 256, 256, 1))
  n = count(variables["params"])
  print(f"DLAGenerator parameters at defaults: {n:,}")
  assert n == dla_param_count((64, 128, 256, 512, 512))


@pytest.mark.parametrize("side", [32, 64, 96])
def test_dla_output_shape(side):
  module = models.build("dla", widths=TINY_DLA)
  variables = abstract_variables(module, (2, side, side, 1))
  assert count(variables["params"]) == dla_param_count(TINY_DLA)
  assert output_shape(module, variables, (2, side, side, 1)) == (
      2, side, side, 2)


def test_dla_output_range_and_batch_stats_only_in_train_mode():
  module = models.build("dla", widths=TINY_DLA)
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 1),
                         minval=-1, maxval=1)
  variables = filled_variables(module, x.shape)
  y, in_eval, in_train = apply_both_modes(module, variables, x)
  assert y.shape == (2, 32, 32, 2)
  assert bool(jnp.all(jnp.abs(y) <= 1.0))
  assert float(jnp.std(y)) > 1e-3
  assert_batch_stats_move_only_in_train_mode(
      variables["batch_stats"], in_eval, in_train)


def test_dla_non_square_and_other_depth():
  module = dla.DLAGenerator(widths=(4, 8, 8))
  variables = abstract_variables(module, (1, 8, 12, 1))
  assert output_shape(module, variables, (1, 8, 12, 1)) == (1, 8, 12, 2)
  assert count(variables["params"]) == dla_param_count((4, 8, 8))


def test_dla_last_node_aggregates_all_earlier_nodes_of_its_scale():
  assert dla.node_inputs(0, 4, 4) == [(0, 0), (0, 1), (0, 2), (0, 3)]
  assert dla.node_inputs(1, 3, 4) == [(1, 0), (1, 1), (1, 2)]
  assert dla.node_inputs(0, 2, 4) == [(0, 1)]
  with pytest.raises(ValueError):
    dla.node_inputs(2, 3, 4)


@pytest.mark.parametrize("shape", [(1, 40, 32, 1), (1, 32, 24, 1)])
def test_dla_rejects_sides_not_divisible_by_16(shape):
  module = models.build("dla", widths=TINY_DLA)
  with pytest.raises(ValueError, match="divisible by 16"):
    abstract_variables(module, shape)


def test_dla_mixed_precision_keeps_float32_params():
  module = models.build("dla", widths=TINY_DLA, dtype=jnp.bfloat16)
  shape = (1, 32, 32, 1)
  variables = abstract_variables(module, shape)
  assert all(p.dtype == jnp.float32
             for p in jax.tree.leaves(variables["params"]))
  y = jax.eval_shape(
      lambda v: module.apply(v, jnp.zeros(shape), train=False), variables)
  assert y.dtype == jnp.bfloat16


def generator_training_step(module):
  """Loss, parameter and input gradients and new batch statistics of one
  training-mode pass: what the pix2pix step takes from the generator."""

  def step(variables, x, target):
    def loss(params, x):
      y, updates = module.apply(
          {"params": params, "batch_stats": variables["batch_stats"]}, x,
          train=True, mutable=["batch_stats"])
      return jnp.mean(jnp.abs(y - target)), updates["batch_stats"]

    (value, stats), grads = jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True)(variables["params"], x)
    return value, grads, stats
  return step


# Both recomputations: `nn.remat` with XLA's forms, the CPU's own with its.
@pytest.mark.parametrize("conv_backend", [None, CpuConvForms()],
                         ids=["xla", "cpu"])
def test_dla_remat_same_function_parameters_gradients_and_batch_stats(
    conv_backend):
  # Two scales below the top: X02 aggregates several inputs, as X04 does.
  widths = (4, 8, 8)
  plain = dla.DLAGenerator(widths=widths, conv_backend=conv_backend)
  recomputed = dla.DLAGenerator(widths=widths, remat=True,
                                conv_backend=conv_backend)
  shape = (2, 16, 16, 1)
  variables = filled_variables(plain, shape)
  assert (jax.tree.structure(abstract_variables(recomputed, shape))
          == jax.tree.structure(variables))
  key_x, key_t = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.uniform(key_x, shape, minval=-1, maxval=1)
  target = jax.random.uniform(key_t, shape[:3] + (2,), minval=-1, maxval=1)

  @jax.jit
  def both(variables, x, target):
    return [(generator_training_step(m)(variables, x, target),
             m.apply(variables, x, train=False))
            for m in (plain, recomputed)]

  expected, actual = both(variables, x, target)
  # Gradients reach every parameter (the recomputation is differentiated).
  assert all(float(jnp.abs(g).max()) > 0
             for g in jax.tree.leaves(expected[0][1][0]))
  for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_dla_cdcgan_generator_step_memory_stays_near_its_activations():
  """The generator's training pass, compile-only, at the config's depth.

  A is one float32 map of the top scale, [B, H, W, widths[0]]. Kept from
  the forward pass into the backward, with `remat` (configs/dla_cdcgan.py):
  every node's output and every upsampled map, 9 A at the top scale and
  about 6 A below it; plus one module's backward at a time, the largest the
  last top-scale node X04: its 5 A of inputs concatenated, their gradient,
  the transposed copy XLA:CPU makes for the weight gradient, and its three
  convolutions' maps, about 25 A. 50 A bounds that with room (XLA measured
  37 A). Without recomputation XLA:CPU keeps three maps per convolution (15
  at the top scale) and the concatenations: 104 A, the 28 GB buffer of the
  256 px, batch 16 step.
  """
  config = load_config("configs/dla_cdcgan.py", arg=None)
  assert config.generator.remat
  kwargs = {k: v for k, v in config.generator.items() if k != "name"}
  # The paper's widths over 8: the same ratios between scales, so the same
  # count of maps per A; compiles in seconds.
  kwargs["widths"] = tuple(w // 8 for w in config.generator.widths)
  # The CPU's forms, whose recomputation XLA:CPU keeps (nn.remat's it
  # removes).
  module = models.build(config.generator.name, conv_backend=CpuConvForms(),
                        **kwargs)
  shape = (2, 128, 128, 1)
  variables = abstract_variables(module, shape)
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  target = jax.ShapeDtypeStruct(shape[:3] + (2,), jnp.float32)
  compiled = jax.jit(generator_training_step(module)).lower(
      variables, x, target).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  top_scale_map = 2 * 128 * 128 * kwargs["widths"][0] * 4
  print(f"temp {temp:,} bytes = {temp / top_scale_map:.1f} A")
  assert temp < 50 * top_scale_map


# --------------------------------------------------------------------------
# DCGAN discriminator


def dcgan_param_count(widths, final_kernel_size, in_channels=3,
                      norm_first_layer=False):
  """Table 1: 4x4 stride-2 convs of `widths`, then a k x k conv to 1 logit."""
  total, c_in = 0, in_channels
  for index, width in enumerate(widths):
    total += conv_params(4, c_in, width, index > 0 or norm_first_layer)
    c_in = width
  return total + conv_params(final_kernel_size, c_in, 1, False)


def receptive_field(num_stride2, final_kernel_size):
  r = final_kernel_size
  for _ in range(num_stride2):
    r = (r - 1) * 2 + 4
  return r


@pytest.mark.parametrize("final_kernel_size", [4, 1])
def test_dcgan_param_count_at_defaults(final_kernel_size):
  module = models.build("dcgan_discriminator",
                        final_kernel_size=final_kernel_size)
  variables = abstract_variables(module, (1, 256, 256, 3))
  n = count(variables["params"])
  print(f"DCGANDiscriminator(final_kernel_size={final_kernel_size}) "
        f"parameters: {n:,}")
  assert n == dcgan_param_count((64, 128, 256, 512), final_kernel_size)
  logits = jax.eval_shape(
      lambda v: module.apply(v, jnp.zeros((1, 256, 256, 3)), train=False),
      variables)
  side = 15 if final_kernel_size == 4 else 16
  assert logits.shape == (1, side, side, 1)


@pytest.mark.parametrize("side", [64, 128, 256])
@pytest.mark.parametrize("final_kernel_size", [4, 1])
def test_dcgan_patch_map_shape(side, final_kernel_size):
  module = models.build("dcgan_discriminator", widths=TINY_D,
                        final_kernel_size=final_kernel_size)
  shape = (2, side, side, 3)
  variables = abstract_variables(module, shape)
  # Padding 1 on each stride-2 layer halves exactly; the 4x4 stride-1 layer
  # with padding 1 loses one row and column, the 1x1 none.
  expected = side // 16 - (1 if final_kernel_size == 4 else 0)
  assert output_shape(module, variables, shape) == (2, expected, expected, 1)
  assert count(variables["params"]) == dcgan_param_count(
      TINY_D, final_kernel_size)


@pytest.mark.parametrize("final_kernel_size", [4, 1])
def test_dcgan_receptive_field(final_kernel_size):
  module = dcgan.DCGANDiscriminator(widths=TINY_D,
                                    final_kernel_size=final_kernel_size)
  side = 160
  x = jax.random.normal(jax.random.PRNGKey(1), (1, side, side, 3))
  variables = filled_variables(module, x.shape)
  center = output_shape(module, variables, x.shape)[1] // 2

  @jax.jit
  def saliency(image):
    one_logit = lambda i: module.apply(variables, i, train=False)[
        0, center, center, 0]
    return jnp.abs(jax.grad(one_logit)(image)).sum(axis=(0, 3))

  grad = np.asarray(saliency(x))
  rows = np.flatnonzero(grad.sum(axis=1))
  cols = np.flatnonzero(grad.sum(axis=0))
  assert rows[0] > 0 and rows[-1] < side - 1  # not cut by the border
  expected = receptive_field(len(TINY_D), final_kernel_size)
  assert rows[-1] - rows[0] + 1 == expected
  assert cols[-1] - cols[0] + 1 == expected


def test_dcgan_first_layer_unnormalized_by_default():
  x = jnp.zeros((1, 64, 64, 3))
  default = abstract_variables(
      dcgan.DCGANDiscriminator(widths=TINY_D), x.shape)
  literal = abstract_variables(
      dcgan.DCGANDiscriminator(widths=TINY_D, norm_first_layer=True), x.shape)
  assert len(default["batch_stats"]) == len(TINY_D) - 1
  assert len(literal["batch_stats"]) == len(TINY_D)
  assert "bias" in default["params"]["Conv_0"]
  assert "bias" not in literal["params"]["Conv_0"]


def test_dcgan_logits_and_batch_stats_only_in_train_mode():
  module = models.build("dcgan_discriminator", widths=TINY_D)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))
  variables = filled_variables(module, x.shape)
  logits, in_eval, in_train = apply_both_modes(module, variables, x)
  assert logits.shape == (2, 3, 3, 1)
  assert float(jnp.std(logits)) > 0
  assert_batch_stats_move_only_in_train_mode(
      variables["batch_stats"], in_eval, in_train)


@pytest.mark.parametrize("shape", [(1, 72, 64, 3), (1, 16, 16, 3)])
def test_dcgan_rejects_bad_sizes(shape):
  # 72 is not a multiple of 16; 16 leaves a 1x1 map for the 4x4 layer.
  module = models.build("dcgan_discriminator", widths=TINY_D)
  with pytest.raises(ValueError):
    abstract_variables(module, shape)


# --------------------------------------------------------------------------
# Patch-MLP Improver


def improver_param_count(patch_size, hidden_widths, in_channels, out_channels):
  sizes = ([patch_size * patch_size * in_channels] + list(hidden_widths)
           + [patch_size * patch_size * out_channels])
  return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def lab_input(key, shape):
  return jax.random.uniform(key, shape, minval=-0.95, maxval=0.95)


def test_improver_param_count_at_defaults_and_against_dense():
  module = models.build("improver")
  side = 256
  variables = abstract_variables(module, (1, side, side, 3))
  n = count(variables["params"])
  print(f"PatchMLPImprover parameters at defaults (L+ab input): {n:,}")
  assert n == improver_param_count(8, (512, 512), 3, 2)
  dense_over_image = (side * side * 3) * (side * side * 2) + side * side * 2
  assert n < dense_over_image
  assert "batch_stats" not in variables


@pytest.mark.parametrize("side", [16, 32, 40])
def test_improver_output_shape_and_range(side):
  module = models.build("improver", hidden_widths=(32,))
  x = lab_input(jax.random.PRNGKey(1), (2, side, side, 3))
  variables = filled_variables(module, x.shape)
  y = module.apply(variables, x, train=True)
  assert y.shape == (2, side, side, 2)
  assert bool(jnp.all(jnp.abs(y) < 1.0))
  assert not np.allclose(y, x[..., 1:])
  assert count(variables["params"]) == improver_param_count(8, (32,), 3, 2)
  assert np.array_equal(y, module.apply(variables, x, train=False))


@pytest.mark.parametrize("zero_init_output", [True, False])
def test_improver_starts_as_identity_with_zero_init_output(zero_init_output):
  module = models.build("improver", hidden_widths=(32,),
                        zero_init_output=zero_init_output)
  x = lab_input(jax.random.PRNGKey(1), (2, 16, 24, 3))
  y, _ = module.init_with_output(jax.random.PRNGKey(0), x, train=False)
  assert np.allclose(y, x[..., 1:], atol=1e-6) == zero_init_output


def test_improver_zero_last_layer_is_identity_even_at_the_bounds():
  module = models.build("improver", hidden_widths=(32,))
  x = lab_input(jax.random.PRNGKey(1), (2, 16, 16, 3))
  x = x.at[0, 0, 0, 1:].set(jnp.array([1.0, -1.0]))
  variables = flax.core.unfreeze(filled_variables(module, x.shape))
  assert not np.allclose(module.apply(variables, x, train=False), x[..., 1:])
  last = variables["params"]["to_delta"]
  assert float(jnp.abs(last["kernel"]).max()) > 0
  variables["params"]["to_delta"] = jax.tree.map(jnp.zeros_like, last)
  y = module.apply(variables, x, train=False)
  np.testing.assert_allclose(y, x[..., 1:], atol=1e-5)


def test_improver_patches_are_independent():
  module = models.build("improver", hidden_widths=(16,))
  x = lab_input(jax.random.PRNGKey(1), (1, 24, 32, 3))
  variables = filled_variables(module, x.shape)
  y = module.apply(variables, x, train=False)
  # Change one pixel of patch (row 1, column 2); only that patch may change.
  y2 = module.apply(variables, x.at[0, 10, 21, 0].add(0.5), train=False)
  changed = np.asarray(jnp.abs(y2 - y).sum(axis=(0, 3)) > 0)
  expected = np.zeros_like(changed)
  expected[8:16, 16:24] = True
  assert np.array_equal(changed, expected)


def test_patches_round_trip_and_layout():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 8, 3))
  patches = improver.to_patches(x, 4)
  assert patches.shape == (2, 3, 2, 48)
  np.testing.assert_array_equal(
      patches[1, 2, 1], np.asarray(x[1, 8:12, 4:8, :]).reshape(-1))
  np.testing.assert_array_equal(improver.from_patches(patches, 4), x)


def test_improver_sees_lightness():
  # With L in its input, the same ab under another L gets another correction.
  module = models.build("improver", hidden_widths=(16,))
  x = lab_input(jax.random.PRNGKey(1), (1, 8, 8, 3))
  variables = filled_variables(module, x.shape)
  brighter = x.at[..., 0].set(0.9)
  assert not np.allclose(module.apply(variables, x, train=False),
                         module.apply(variables, brighter, train=False))


@pytest.mark.parametrize("kwargs,shape", [
    ({}, (1, 20, 16, 3)),
    ({"patch_size": 4}, (1, 16, 18, 3)),
    ({}, (1, 16, 16, 1)),
    ({"activation": "swish!"}, (1, 16, 16, 3)),
])
def test_improver_rejects_bad_input(kwargs, shape):
  module = models.build("improver", hidden_widths=(8,), **kwargs)
  with pytest.raises(ValueError):
    abstract_variables(module, shape)


# --------------------------------------------------------------------------
# Registry


@pytest.mark.parametrize("name,cls", [
    ("dla", dla.DLAGenerator),
    ("dcgan_discriminator", dcgan.DCGANDiscriminator),
    ("improver", improver.PatchMLPImprover),
])
def test_registry_builds(name, cls):
  module = models.build(name, dtype=jnp.float32, param_dtype=jnp.float32)
  assert isinstance(module, cls)
  with pytest.raises(ValueError, match="takes no argument"):
    models.build(name, no_such_option=1)
