"""The pix2pix networks: U-Net generator and PatchGAN discriminator."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcolor import models
from jaxcolor.models import patchgan, unet
from jaxcolor.models.patchgan import PatchGANDiscriminator
from jaxcolor.models.unet import UNetGenerator


def abstract_variables(module, shape):
  """Variable shapes of `module` on an input of `shape`, computing nothing."""
  init = functools.partial(module.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), jnp.zeros(shape))


def count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def random_variables(module, x, seed):
  """Variables of the scale a trained network has, drawn with NumPy.

  Compiling `module.init` costs seconds to tens of seconds on CPU (threefry
  random bits for every parameter), running it nothing: shapes come from
  `jax.eval_shape` instead. And N(0, 0.02) kernels shrink the signal layer by
  layer at the small test widths, so comparisons would pass for an empty
  network; He-scaled kernels, non-zero biases and non-trivial batch
  statistics do not.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = np.prod(leaf.shape[:-1])
      value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)
    elif name == "scale":
      value = 1.0 + 0.2 * rng.normal(size=leaf.shape)
    elif name == "var":
      value = rng.uniform(0.5, 1.5, size=leaf.shape)
    else:  # bias, mean
      value = 0.1 * rng.normal(size=leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract_variables(module, x.shape))


def apply(module, variables, x, train=False, **kwargs):
  return jax.jit(functools.partial(module.apply, train=train, **kwargs))(variables, x)


def dropout_rngs(seed):
  # Threefry bits compile slowly on CPU; RngBitGenerator bits do not.
  return {"dropout": jax.random.key(seed, impl="rbg")}


def uniform(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


# Parameter counts of the reference networks (PyTorch's `sum(p.numel() for p in
# net.parameters())`): 256-px pix2pix generator 1 -> 2 channels, its 128-px
# (7-level) variant, and the 70x70 PatchGAN on 3 channels, all with batch norm.
@pytest.mark.parametrize("num_downsamplings,size,expected",
                         [(8, 256, 54_409_858), (7, 128, 41_824_898)])
def test_generator_parameter_count(num_downsamplings, size, expected):
  module = UNetGenerator(num_downsamplings=num_downsamplings)
  variables = abstract_variables(module, (1, size, size, 1))
  assert count(variables["params"]) == expected


def test_discriminator_parameter_count():
  variables = abstract_variables(PatchGANDiscriminator(), (1, 256, 256, 3))
  assert count(variables["params"]) == 2_765_633


def test_norm_choice_changes_parameter_count_as_the_reference():
  # Batch norm brings scale and offset (2C) but drops the bias (C) of the
  # convolution before it; instance norm (no affine) and no norm bring
  # nothing and keep every bias. Generator: normalized channels 4,928
  # (down 128+256+4*512, up 64+128+256+4*512), and down_0 (64) and the
  # innermost down (512) gain a bias: 4,928 - 576 = 4,352 fewer.
  # Discriminator: normalized channels 128+256+512 = 896.
  for norm in ("instance", "none"):
    generator = abstract_variables(UNetGenerator(norm=norm), (1, 256, 256, 1))
    assert count(generator["params"]) == 54_409_858 - 4_352
    assert "batch_stats" not in generator
    discriminator = abstract_variables(PatchGANDiscriminator(norm=norm),
                                       (1, 256, 256, 3))
    assert count(discriminator["params"]) == 2_765_633 - 896


def test_generator_batch_stats_shapes_match_norm_layers():
  variables = abstract_variables(UNetGenerator(), (1, 256, 256, 1))
  stats = variables["batch_stats"]
  # No norm after the outermost and the innermost (bottleneck) encoder convs.
  assert "down_norm_0" not in stats and "down_norm_7" not in stats
  assert stats["down_norm_1"]["BatchNorm_0"]["mean"].shape == (128,)
  assert stats["up_norm_7"]["BatchNorm_0"]["mean"].shape == (512,)
  assert stats["up_norm_1"]["BatchNorm_0"]["mean"].shape == (64,)
  params = variables["params"]
  assert params["up_0"]["kernel"].shape == (4, 4, 128, 2)
  assert params["up_0"]["bias"].shape == (2,)
  assert "bias" not in params["down_0"] and "bias" not in params["up_1"]
  assert set(params) == set(unet.reference_layer_paths(8))


def test_generator_dropout_levels_are_the_references_use_dropout_blocks():
  # The reference's num_downs - 5 `use_dropout` blocks sit between the
  # innermost block and the four outer ones: levels 4, 5, 6 of 8 (decoder
  # layers 2-4), level 4 of 6, none below 6 levels.
  for num_downsamplings, expected in [(8, {4, 5, 6}), (6, {4}), (5, set())]:
    module = UNetGenerator(num_downsamplings=num_downsamplings, ngf=2)
    x = jnp.zeros((1, 2 ** num_downsamplings, 2 ** num_downsamplings, 1))
    apply_fn = functools.partial(
        module.apply, train=True, capture_intermediates=True,
        mutable=["batch_stats", "intermediates"])
    _, state = jax.eval_shape(
        lambda v, x: apply_fn(v, x, rngs=dropout_rngs(0)),
        abstract_variables(module, x.shape), x)
    dropout = {int(name.split("_")[1]) for name in state["intermediates"]
               if name.startswith("dropout_")}
    assert dropout == expected


def test_generator_output_shape_and_range():
  module = UNetGenerator(ngf=4)  # the 256-px, 8-level network, narrow
  x = uniform((2, 256, 256, 1), seed=1)
  y = apply(module, random_variables(module, x, seed=1), x)
  assert y.shape == (2, 256, 256, 2)
  assert y.dtype == jnp.float32
  assert np.all(np.abs(y) <= 1.0)
  assert np.std(y) > 0


def test_generator_mixed_precision():
  module = UNetGenerator(num_downsamplings=2, ngf=4, dtype=jnp.bfloat16)
  x = jnp.zeros((1, 8, 8, 1))
  variables = abstract_variables(module, x.shape)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  y = jax.eval_shape(functools.partial(module.apply, train=False), variables, x)
  assert y.dtype == jnp.bfloat16


def test_generator_rejects_indivisible_size():
  with pytest.raises(ValueError, match=r"100x100.*2\*\*7.*num_downsamplings=7"):
    abstract_variables(UNetGenerator(num_downsamplings=7), (1, 100, 100, 1))
  with pytest.raises(ValueError, match="num_downsamplings=1"):
    abstract_variables(UNetGenerator(num_downsamplings=1), (1, 8, 8, 1))


@pytest.fixture(scope="module")
def dropout_generator():
  """Six levels, so that the one `use_dropout` level (4) exists; 64 px."""
  module = UNetGenerator(num_downsamplings=6, ngf=4)
  x = uniform((2, 64, 64, 1), seed=2)
  return module, random_variables(module, x, seed=2), x


def test_dropout_only_in_train(dropout_generator):
  module, variables, x = dropout_generator

  @jax.jit
  def train_apply(rngs):
    y, _ = module.apply(variables, x, train=True, mutable=["batch_stats"],
                        rngs=rngs)
    return y

  @jax.jit
  def eval_apply(rngs):
    return module.apply(variables, x, train=False, rngs=rngs)

  a, b = train_apply(dropout_rngs(10)), train_apply(dropout_rngs(11))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, train_apply(dropout_rngs(10)))
  np.testing.assert_array_equal(eval_apply(dropout_rngs(10)),
                                eval_apply(dropout_rngs(11)))
  # Eval needs no dropout rng at all (tracing would fail if it asked for one).
  jax.eval_shape(functools.partial(module.apply, train=False), variables, x)


def test_batch_stats_move_only_in_train(dropout_generator):
  module, variables, x = dropout_generator
  _, updates = apply(module, variables, x, train=True, mutable=["batch_stats"],
                     rngs=dropout_rngs(0))
  old = jax.tree.leaves(variables["batch_stats"])
  new = jax.tree.leaves(updates["batch_stats"])
  assert len(old) == len(new) == 2 * (4 + 5)  # mean, var of 4 down + 5 up norms
  assert all(not np.allclose(o, n) for o, n in zip(old, new))
  # In eval the running statistics are read, never written.
  _, eval_updates = apply(module, variables, x, mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, eval_updates["batch_stats"],
               variables["batch_stats"])


def test_discriminator_output_shape():
  shape = jax.eval_shape(
      lambda x: PatchGANDiscriminator().init_with_output(
          jax.random.key(0), x, train=False)[0],
      jnp.zeros((2, 256, 256, 3)))
  assert shape.shape == (2, 30, 30, 1)
  module = PatchGANDiscriminator(ndf=8, norm="instance")
  x = uniform((2, 256, 256, 3), seed=3)
  y = apply(module, random_variables(module, x, seed=3), x, train=True)
  assert y.shape == (2, 30, 30, 1)
  assert np.all(np.isfinite(y))


def test_discriminator_receptive_field_is_70():
  assert patchgan.receptive_field(3) == 70
  # XLA's own convolutions (the default): the CPU's Winograd forms make each
  # output depend on its whole input tile at the level of float32 rounding
  # (tests/test_backends.py bounds that), which an exact-zero test of the
  # field would count.
  module = PatchGANDiscriminator(ndf=8)
  x = uniform((1, 128, 128, 3), seed=4)
  variables = random_variables(module, x, seed=4)

  def logits(x):
    # Eval batch norm is per pixel; train batch norm would couple all pixels.
    return module.apply(variables, x, train=False)[0, :, :, 0]

  # jacobian[i, j] = d logit(i, j) / d input: which pixels a logit sees, i.e.
  # which logits change when one input pixel changes.
  jacobian = np.asarray(jax.jit(jax.jacrev(logits))(x))[:, :, 0]
  assert jacobian.shape == (14, 14, 128, 128, 3)  # 128 -> 64, 32, 16, 15, 14
  out_side = jacobian.shape[0]
  seen = np.any(jacobian != 0, axis=-1)
  for i in range(out_side):
    for j in range(out_side):
      rows = np.flatnonzero(seen[i, j].any(axis=1))
      cols = np.flatnonzero(seen[i, j].any(axis=0))
      # Logit (i, j) sees input rows 8i - 23 .. 8i + 46 (strides 2, 2, 2, 1, 1
      # and padding 1 everywhere), clipped to the image.
      assert rows[0] == max(8 * i - 23, 0) and rows[-1] == min(8 * i + 46, 127)
      assert cols[0] == max(8 * j - 23, 0) and cols[-1] == min(8 * j + 46, 127)
      assert rows[-1] - rows[0] + 1 <= 70 and cols[-1] - cols[0] + 1 <= 70
  center = out_side // 2
  rows = np.flatnonzero(seen[center, center].any(axis=1))
  assert rows[-1] - rows[0] + 1 == 70 == rows.size


def test_registry_builds_both():
  generator = models.build("unet")
  assert isinstance(generator, UNetGenerator)
  assert (generator.output_channels, generator.num_downsamplings, generator.ngf,
          generator.norm, generator.dropout_rate) == (2, 8, 64, "batch", 0.5)
  discriminator = models.build("patchgan")
  assert isinstance(discriminator, PatchGANDiscriminator)
  assert (discriminator.ndf, discriminator.num_layers, discriminator.norm) == (
      64, 3, "batch")
  assert models.build("unet", ngf=8, norm="instance").ngf == 8
  with pytest.raises(ValueError, match="n_layers"):
    models.build("patchgan", n_layers=4)
  with pytest.raises(ValueError, match="use_dropout"):
    models.build("unet", use_dropout=True)


# --- Against PyTorch modules built like the reference's ---------------------


def _to_torch_state(variables, paths, transposed, torch_module):
  """Our variables written into `torch_module`'s state dict via `paths`."""
  import torch
  state = torch_module.state_dict()
  filled = set()

  def put(key, value):
    assert state[key].shape == value.shape, key
    state[key] = torch.from_numpy(np.array(value))
    filled.add(key)

  for name, prefix in paths.items():
    params = variables["params"].get(name, {})
    if "kernel" in params:
      order = (2, 3, 0, 1) if name in transposed else (3, 2, 0, 1)
      put(f"{prefix}.weight", np.asarray(params["kernel"]).transpose(order))
      if "bias" in params:
        put(f"{prefix}.bias", params["bias"])
    elif "BatchNorm_0" in params:
      put(f"{prefix}.weight", params["BatchNorm_0"]["scale"])
      put(f"{prefix}.bias", params["BatchNorm_0"]["bias"])
      stats = variables["batch_stats"][name]["BatchNorm_0"]
      put(f"{prefix}.running_mean", stats["mean"])
      put(f"{prefix}.running_var", stats["var"])
  missing = {k for k in state if not k.endswith("num_batches_tracked")} - filled
  assert not missing, missing
  torch_module.load_state_dict(state)


def _torch_norm(torch, norm, channels):
  if norm == "batch":
    return torch.nn.BatchNorm2d(channels)
  if norm == "instance":
    return torch.nn.InstanceNorm2d(channels)
  return torch.nn.Identity()


def _torch_unet(torch, in_channels, out_channels, num_downs, ngf, norm, dropout):
  """A U-Net nested as the reference's UnetSkipConnectionBlock chain.

  Module and Sequential indices reproduce the reference's state-dict keys.
  """
  nn = torch.nn
  bias = norm != "batch"

  class Block(nn.Module):

    def __init__(self, outer, inner, child=None, in_ch=None, outermost=False,
                 use_dropout=False):
      super().__init__()
      self.outermost = outermost
      in_ch = outer if in_ch is None else in_ch
      down = nn.Conv2d(in_ch, inner, 4, stride=2, padding=1, bias=bias)
      if outermost:
        seq = [down, child, nn.ReLU(),
               nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1),
               nn.Tanh()]
      elif child is None:
        seq = [nn.LeakyReLU(0.2), down, nn.ReLU(),
               nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias),
               _torch_norm(torch, norm, outer)]
      else:
        seq = [nn.LeakyReLU(0.2), down, _torch_norm(torch, norm, inner), child,
               nn.ReLU(),
               nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1,
                                  bias=bias),
               _torch_norm(torch, norm, outer)]
        if use_dropout:
          seq.append(nn.Dropout(0.5))
      self.model = nn.Sequential(*seq)

    def forward(self, x):
      y = self.model(x)
      return y if self.outermost else torch.cat([x, y], 1)

  class Generator(nn.Module):

    def __init__(self):
      super().__init__()
      block = Block(ngf * 8, ngf * 8)
      for _ in range(num_downs - 5):
        block = Block(ngf * 8, ngf * 8, block, use_dropout=dropout)
      for mult in (4, 2, 1):
        block = Block(ngf * mult, ngf * 2 * mult, block)
      self.model = Block(out_channels, ngf, block, in_ch=in_channels,
                         outermost=True)

    def forward(self, x):
      return self.model(x)

  return Generator()


def _torch_patchgan(torch, in_channels, ndf, num_layers, norm):
  nn = torch.nn
  bias = norm != "batch"
  seq = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
  width = ndf
  for layer in range(1, num_layers + 1):
    new_width = ndf * min(2 ** layer, 8)
    stride = 2 if layer < num_layers else 1
    seq += [nn.Conv2d(width, new_width, 4, stride=stride, padding=1, bias=bias),
            _torch_norm(torch, norm, new_width), nn.LeakyReLU(0.2)]
    width = new_width
  seq.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))

  class Discriminator(nn.Module):

    def __init__(self):
      super().__init__()
      self.model = nn.Sequential(*seq)

    def forward(self, x):
      return self.model(x)

  return Discriminator()


def _nchw(x):
  import torch
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_generator_matches_torch_reference(norm):
  torch = pytest.importorskip("torch")
  num_downs, ngf = 6, 4
  module = UNetGenerator(num_downsamplings=num_downs, ngf=ngf, norm=norm)
  x = uniform((2, 64, 64, 1), seed=5)
  variables = random_variables(module, x, seed=5)
  reference = _torch_unet(torch, 1, 2, num_downs, ngf, norm, dropout=True)
  transposed = {name for name in unet.reference_layer_paths(num_downs)
                if name.startswith("up_") and "norm" not in name}
  _to_torch_state(variables, unet.reference_layer_paths(num_downs), transposed,
                  reference)
  reference.eval()
  with torch.no_grad():
    expected = reference(_nchw(x)).numpy().transpose(0, 2, 3, 1)
  y = apply(module, variables, x)
  assert np.std(expected) > 0.1
  np.testing.assert_allclose(y, expected, atol=1e-4)

  # Train mode without dropout: batch statistics of the batch at hand.
  reference_train = _torch_unet(torch, 1, 2, num_downs, ngf, norm, dropout=False)
  reference_train.load_state_dict(reference.state_dict())
  reference_train.train()
  with torch.no_grad():
    expected = reference_train(_nchw(x)).numpy().transpose(0, 2, 3, 1)
  y, _ = apply(module.clone(dropout_rate=0.0), variables, x, train=True,
               mutable=["batch_stats"])
  np.testing.assert_allclose(y, expected, atol=1e-4)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_discriminator_matches_torch_reference(norm):
  torch = pytest.importorskip("torch")
  module = PatchGANDiscriminator(ndf=8, num_layers=3, norm=norm)
  x = uniform((2, 64, 64, 3), seed=7)
  variables = random_variables(module, x, seed=7)
  reference = _torch_patchgan(torch, 3, 8, 3, norm)
  _to_torch_state(variables, patchgan.reference_layer_paths(3), set(), reference)
  reference.eval()
  with torch.no_grad():
    expected = reference(_nchw(x)).numpy().transpose(0, 2, 3, 1)
  y = apply(module, variables, x)
  assert y.shape == expected.shape == (2, 6, 6, 1)
  assert np.std(expected) > 0.1
  np.testing.assert_allclose(y, expected, atol=1e-4)
