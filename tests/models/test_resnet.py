"""ResNet-18, the ResNet-18 U-Net and the torchvision weight import."""

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcolor.models import build
from jaxcolor.models.resnet import ResNet18, ResNet18Body
from jaxcolor.models.resnet_unet import (PixelShuffleICNR, ResNet18UNet,
                                         pixel_shuffle)
from jaxcolor.models.torchvision_import import (convert_resnet18,
                                                load_encoder_into_unet,
                                                load_state_dict,
                                                load_torchvision_resnet18)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_init(model, shape):
  return jax.eval_shape(functools.partial(model.init, train=False),
                        jax.random.key(0), jnp.zeros(shape, jnp.float32))


def torchvision_resnet18_shapes(num_classes=1000, in_channels=3):
  """torchvision resnet18().state_dict() names and shapes, written out."""
  shapes = {}

  def bn(prefix, c):
    shapes.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,),
                   f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,),
                   f"{prefix}.num_batches_tracked": ()})

  shapes["conv1.weight"] = (64, in_channels, 7, 7)
  bn("bn1", 64)
  inplanes = 64
  for stage, planes in enumerate((64, 128, 256, 512), start=1):
    for block in (0, 1):
      prefix = f"layer{stage}.{block}"
      block_in = inplanes if block == 0 else planes
      shapes[f"{prefix}.conv1.weight"] = (planes, block_in, 3, 3)
      bn(f"{prefix}.bn1", planes)
      shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
      bn(f"{prefix}.bn2", planes)
      if block == 0 and stage > 1:
        shapes[f"{prefix}.downsample.0.weight"] = (planes, block_in, 1, 1)
        bn(f"{prefix}.downsample.1", planes)
    inplanes = planes
  shapes["fc.weight"] = (num_classes, 512)
  shapes["fc.bias"] = (num_classes,)
  return shapes


def random_state_dict(seed=0):
  """Random weights with sane scales, so activations stay O(1) in eval."""
  rng = np.random.default_rng(seed)
  state_dict = {}
  for name, shape in torchvision_resnet18_shapes().items():
    if name.endswith("num_batches_tracked"):
      value = np.array(7, np.int64)
    elif name.endswith("running_var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith("running_mean") or name.endswith("bias"):
      value = rng.normal(0.0, 0.1, shape)
    elif len(shape) == 1:                        # batch-norm weight
      value = rng.uniform(0.5, 1.5, shape)
    else:
      fan_in = int(np.prod(shape[1:]))
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    state_dict[name] = np.asarray(value, np.float32 if value.ndim else np.int64)
  return state_dict


# --- ResNet-18 ---------------------------------------------------------------

def test_resnet18_has_torchvision_parameter_count():
  variables = _abstract_init(build("resnet18"), (1, 224, 224, 3))
  assert _count(variables["params"]) == 11_689_512
  expected = sum(int(np.prod(s)) for n, s in torchvision_resnet18_shapes().items()
                 if "running" not in n and "num_batches" not in n)
  assert _count(variables["params"]) == expected


def test_resnet18_output_and_feature_shapes():
  model = ResNet18(num_classes=10)
  x = jnp.zeros((2, 64, 64, 3))
  variables = _abstract_init(model, x.shape)
  logits = jax.eval_shape(functools.partial(model.apply, train=False),
                          variables, x)
  assert logits.shape == (2, 10)
  body = {c: variables[c]["body"] for c in ("params", "batch_stats")}
  features = jax.eval_shape(functools.partial(ResNet18Body().apply, train=False),
                            body, x)
  assert [f.shape for f in features] == [
      (2, 32, 32, 64), (2, 16, 16, 64), (2, 8, 8, 128), (2, 4, 4, 256),
      (2, 2, 2, 512)]


def test_resnet18_rejects_wrong_channel_count():
  with pytest.raises(ValueError, match="input_channels=3.*1 channels"):
    ResNet18().init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)


# --- ResNet-18 U-Net ---------------------------------------------------------

def test_unet_parameter_count_and_encoder():
  variables = _abstract_init(build("resnet18_unet"), (1, 256, 256, 1))
  # The encoder is the ResNet-18 body: all of it but fc, with a 1-channel stem.
  assert _count(variables["params"]["encoder"]) == (
      11_689_512 - (512 * 1000 + 1000) - 64 * 2 * 7 * 7)
  assert _count(variables["params"]) == 31_099_672
  resnet = _abstract_init(ResNet18(input_channels=1), (1, 64, 64, 1))
  assert (jax.tree.map(lambda a: a.shape, resnet["params"]["body"])
          == jax.tree.map(lambda a: a.shape, variables["params"]["encoder"]))


@pytest.mark.parametrize("size", [64, 128])
def test_unet_output_shape(size):
  model = ResNet18UNet()
  x = jnp.zeros((2, size, size, 1))
  variables = _abstract_init(model, x.shape)
  y = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  assert y.shape == (2, size, size, 2)


@pytest.fixture(scope="module")
def tiny_unet():
  # Widths do not change the topology; a narrow encoder keeps tests cheap.
  # Parameters do not depend on the image size: one init serves all sizes.
  # The non-partitionable threefry compiles this init ~3x faster on XLA:CPU
  # (measured: 9 s against 26 s of CPU); which bits come out does not matter.
  model = build("resnet18_unet", base_features=8)
  with jax.threefry_partitionable(False):
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(1), jnp.zeros((1, 32, 32, 1)))
  return model, variables


@pytest.mark.parametrize("size", [64, 128])
def test_unet_tiny_variant_runs_in_tanh_range(tiny_unet, size):
  model, variables = tiny_unet
  x = jax.random.uniform(jax.random.key(0), (2, size, size // 2, 1),
                         minval=-1.0, maxval=1.0)
  y, updates = jax.jit(functools.partial(
      model.apply, train=True, mutable=["batch_stats"]))(variables, x)
  assert y.shape == (2, size, size // 2, 2)
  assert np.all(np.abs(np.asarray(y)) <= 1.0)
  assert float(jnp.std(y)) > 0.0
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
      variables["batch_stats"])
  assert variables["params"]["up4"]["conv2"]["kernel"].shape == (3, 3, 12, 12)


def test_unet_init_follows_torchvision_and_fastai(tiny_unet):
  _, variables = tiny_unet
  params = variables["params"]
  # torchvision: Kaiming normal, fan_out; fastai decoder: Kaiming normal, fan_in.
  stage3 = np.asarray(params["encoder"]["layer3_0"]["conv2"]["kernel"])
  np.testing.assert_allclose(stage3.std(), np.sqrt(2 / (9 * 32)), rtol=0.1)
  middle = np.asarray(params["middle_conv1"]["kernel"])         # 64 -> 128
  np.testing.assert_allclose(middle.std(), np.sqrt(2 / (9 * 64)), rtol=0.1)
  np.testing.assert_array_equal(params["middle_conv1"]["bias"], 0.0)
  np.testing.assert_array_equal(params["encoder"]["bn1"]["scale"], 1.0)
  np.testing.assert_array_equal(params["up1"]["skip_bn"]["bias"], np.float32(1e-3))


def test_unet_decoder_widths_override():
  model = ResNet18UNet(base_features=8, decoder_features=(32, 24, 16, 8))
  variables = _abstract_init(model, (1, 32, 64, 1))
  widths = [variables["params"][f"up{i}"]["conv2"]["kernel"].shape[-1]
            for i in range(1, 5)]
  assert widths == [32, 24, 16, 8]
  assert variables["params"]["encoder"]["conv1"]["kernel"].shape == (7, 7, 1, 8)
  with pytest.raises(ValueError, match="4 widths"):
    _abstract_init(ResNet18UNet(decoder_features=(8, 8)), (1, 32, 32, 1))


@pytest.mark.parametrize("shape", [(1, 100, 100, 1), (1, 64, 96 + 8, 1)])
def test_unet_rejects_sizes_not_multiple_of_32(shape):
  with pytest.raises(ValueError, match="multiples of 32"):
    ResNet18UNet().init(jax.random.key(0), jnp.zeros(shape), train=False)


def test_unet_rejects_wrong_channel_count():
  with pytest.raises(ValueError, match="input_channels=1"):
    ResNet18UNet().init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                        train=False)


def test_icnr_shuffle_starts_as_nearest_upsampling():
  module = PixelShuffleICNR(features=5)
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 7))
  variables = module.init(jax.random.key(1), x)
  kernel = np.asarray(variables["params"]["conv"]["kernel"])   # [1, 1, 7, 20]
  groups = kernel.reshape(1, 1, 7, 5, 4)
  # Each output channel's four sub-pixel kernels are identical ...
  np.testing.assert_array_equal(groups, np.repeat(groups[..., :1], 4, axis=-1))
  assert np.std(groups[..., 0]) > 0.1
  # ... so every 2x2 block of the shuffled output is constant.
  y = np.asarray(module.apply(variables, x))                   # [2, 8, 12, 5]
  assert y.shape == (2, 8, 12, 5)
  blocks = y.reshape(2, 4, 2, 6, 2, 5)
  np.testing.assert_allclose(blocks, np.broadcast_to(
      blocks[:, :, :1, :, :1], blocks.shape), atol=1e-6)
  assert np.std(y) > 0.0


def test_pixel_shuffle_channel_order():
  x = np.arange(1 * 2 * 3 * 8, dtype=np.float32).reshape(1, 2, 3, 8)
  y = np.asarray(pixel_shuffle(jnp.asarray(x), 2))
  assert y.shape == (1, 4, 6, 2)
  for h, w, c, i, j in [(0, 0, 0, 0, 0), (1, 2, 1, 1, 0), (0, 1, 1, 1, 1)]:
    assert y[0, 2 * h + i, 2 * w + j, c] == x[0, h, w, c * 4 + i * 2 + j]


# --- torchvision import --------------------------------------------------------

def _flax_key(name):
  """Independent of the converter: torchvision name -> (collection, path)."""
  *modules, leaf = name.split(".")
  path, i = [], 0
  while i < len(modules):
    if modules[i].startswith("layer") or modules[i] == "downsample":
      path.append(f"{modules[i]}_{modules[i + 1]}")
      i += 2
    else:
      path.append(modules[i])
      i += 1
  path = path if path == ["fc"] else ["body"] + path
  if leaf in ("running_mean", "running_var"):
    return "batch_stats", tuple(path + [leaf.split("_")[1]])
  is_norm = "bn" in path[-1] or path[-1] == "downsample_1"
  leaf = {"weight": "scale" if is_norm else "kernel", "bias": "bias"}[leaf]
  return "params", tuple(path + [leaf])


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def test_convert_maps_every_name_and_layout():
  state_dict = random_state_dict()
  variables = convert_resnet18(state_dict)
  converted = 0
  for name, value in state_dict.items():
    if name.endswith("num_batches_tracked"):
      continue
    collection, path = _flax_key(name)
    got = _get(variables[collection], path)
    if value.ndim == 4:
      expected = np.transpose(value, (2, 3, 1, 0))
    elif value.ndim == 2:
      expected = value.T
    else:
      expected = value
    np.testing.assert_array_equal(got, expected)
    converted += value.size
  assert converted == _count(variables) == 11_689_512 + 2 * 4800


def test_convert_without_fc_and_gray_stem():
  state_dict = random_state_dict()
  variables = convert_resnet18(state_dict, input_channels=1, include_fc=False)
  assert "fc" not in variables["params"]
  np.testing.assert_allclose(
      variables["params"]["body"]["conv1"]["kernel"],
      state_dict["conv1.weight"].sum(axis=1, keepdims=True).transpose(2, 3, 1, 0),
      rtol=1e-6)


def test_convert_names_the_first_problem():
  state_dict = random_state_dict()
  broken = dict(state_dict)
  del broken["layer3.1.bn2.running_var"]
  with pytest.raises(ValueError, match=r"1 missing, first 'layer3.1.bn2.running_var'"):
    convert_resnet18(broken)
  broken = dict(state_dict, **{"layer5.0.conv1.weight": np.zeros((2, 2, 3, 3))})
  with pytest.raises(ValueError, match=r"1 unexpected, first 'layer5.0.conv1.weight' \(2x2x3x3\)"):
    convert_resnet18(broken)
  broken = dict(state_dict, **{"layer2.0.conv1.weight": np.zeros((128, 32, 3, 3))})
  with pytest.raises(ValueError, match=r"mismatched, first layer2.0.conv1.weight: 128x32x3x3.*3x3x64x128"):
    convert_resnet18(broken)


def _save_npz(path, state_dict):
  np.savez(path, **state_dict)
  return str(path)


def test_npz_round_trip_and_hash_in_name(tmp_path):
  state_dict = random_state_dict()
  path = _save_npz(tmp_path / "resnet18_export.npz", state_dict)
  loaded = load_torchvision_resnet18(path)
  assert sorted(loaded) == sorted(state_dict)
  for name in state_dict:
    np.testing.assert_array_equal(loaded[name], state_dict[name])
  digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
  hashed = tmp_path / f"resnet18-{digest[:8]}.npz"
  hashed.write_bytes(open(path, "rb").read())
  assert sorted(load_torchvision_resnet18(str(hashed))) == sorted(state_dict)
  assert load_state_dict(path, expected_sha256_prefix=digest[:12])


def test_sha256_mismatch_is_a_clear_error(tmp_path):
  state_dict = random_state_dict()
  content = open(_save_npz(tmp_path / "a.npz", state_dict), "rb").read()
  digest = hashlib.sha256(content).hexdigest()
  wrong = "deadbeef" if not digest.startswith("deadbeef") else "0badf00d"
  bad = tmp_path / f"resnet18-{wrong}.npz"
  bad.write_bytes(content)
  with pytest.raises(ValueError) as error:
    load_torchvision_resnet18(str(bad))
  message = str(error.value)
  assert str(bad) in message and wrong in message and digest in message
  with pytest.raises(ValueError, match=f"expected a digest starting with '{wrong}'"):
    load_torchvision_resnet18(str(tmp_path / "a.npz"),
                              expected_sha256_prefix=wrong)


def test_gray_stem_equals_rgb_stem_on_replicated_lightness():
  state_dict = random_state_dict()
  rgb = convert_resnet18(state_dict, input_channels=3, include_fc=False)
  gray = convert_resnet18(state_dict, input_channels=1, include_fc=False)
  body = lambda v: {c: v[c]["body"] for c in ("params", "batch_stats")}
  apply_body = jax.jit(functools.partial(ResNet18Body().apply, train=False))
  lightness = jax.random.uniform(jax.random.key(0), (2, 64, 64, 1),
                                 minval=-1.0, maxval=1.0)
  rgb_features = apply_body(body(rgb), jnp.tile(lightness, (1, 1, 1, 3)))
  gray_features = apply_body(body(gray), lightness)
  assert float(jnp.std(rgb_features[-1])) > 0.1
  for got, expected in zip(gray_features, rgb_features):
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)

  # The same adaptation when an RGB body goes into a 1-channel U-Net encoder.
  unet_variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                _abstract_init(ResNet18UNet(), (1, 64, 64, 1)))
  loaded = load_encoder_into_unet(unet_variables, rgb)
  encoder = {c: loaded[c]["encoder"] for c in ("params", "batch_stats")}
  jax.tree.map(np.testing.assert_array_equal, encoder, body(gray))
  unet_features = apply_body(encoder, lightness)
  np.testing.assert_allclose(unet_features[-1], rgb_features[-1], atol=1e-4,
                             rtol=1e-4)
  # Only the encoder changed.
  assert loaded["params"]["up1"] is unet_variables["params"]["up1"]


def test_load_encoder_rejects_other_widths():
  resnet = _abstract_init(ResNet18(base_features=8), (1, 64, 64, 3))
  unet = _abstract_init(ResNet18UNet(), (1, 64, 64, 1))
  with pytest.raises(ValueError, match="base_features"):
    load_encoder_into_unet(unet, resnet)


# --- against PyTorch (skipped where torch is not installed) -------------------

def _torch_resnet18():
  """A module with torchvision's resnet18 layout, names and forward."""
  torch = pytest.importorskip("torch")
  nn = torch.nn

  class Block(nn.Module):

    def __init__(self, inplanes, planes, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.relu = nn.ReLU(inplace=True)
      self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.downsample = None
      if stride != 1 or inplanes != planes:
        self.downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride, bias=False),
            nn.BatchNorm2d(planes))

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      shortcut = x if self.downsample is None else self.downsample(x)
      return self.relu(y + shortcut)

  class Net(nn.Module):

    def __init__(self):
      super().__init__()
      self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn1 = nn.BatchNorm2d(64)
      self.relu = nn.ReLU(inplace=True)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
      inplanes = 64
      for stage, planes in enumerate((64, 128, 256, 512), start=1):
        stride = 1 if stage == 1 else 2
        setattr(self, f"layer{stage}", nn.Sequential(
            Block(inplanes, planes, stride), Block(planes, planes, 1)))
        inplanes = planes
      self.avgpool = nn.AdaptiveAvgPool2d(1)
      self.fc = nn.Linear(512, 1000)

    def forward(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      for stage in range(1, 5):
        x = getattr(self, f"layer{stage}")(x)
      return self.fc(torch.flatten(self.avgpool(x), 1))

  return torch, Net()


def test_logits_match_torch(tmp_path):
  torch, net = _torch_resnet18()
  torch.manual_seed(0)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
  net.eval()
  state_dict = net.state_dict()
  assert sorted((k, tuple(v.shape)) for k, v in state_dict.items()) == sorted(
      torchvision_resnet18_shapes().items())
  assert sum(p.numel() for p in net.parameters()) == 11_689_512
  path = tmp_path / "resnet18_torch.pth"
  torch.save(state_dict, path)

  variables = convert_resnet18(load_torchvision_resnet18(str(path)))
  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    expected = net(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits = ResNet18().apply(variables, jnp.asarray(images), train=False)
  assert np.std(expected) > 0.1
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_pixel_shuffle_matches_torch():
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 12)).astype(np.float32)
  expected = torch.nn.PixelShuffle(2)(
      torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(pixel_shuffle(jnp.asarray(x), 2), expected)
