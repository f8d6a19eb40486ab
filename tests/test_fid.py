"""FID: the Inception network and its weight converter, the distance, moments.

The network is checked against a PyTorch build of pytorch-fid's FID Inception
written here from its layer list (torchvision's Inception3 with the
FIDInceptionA/C/E_1/E_2 patches), on random weights this test makes; the
distance against scipy's float64 matrix square root.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxcolor import models
from jaxcolor.evaluation import fid
from jaxcolor.models import inception

# torchvision's inception_v3 has 27,161,264 parameters; without its 1000-way
# fc (2,049,000) and the auxiliary classifier (3,326,696) that leaves the
# feature network's 21,785,568. Batch norm: 17,216 channels, mean and var.
_PARAMS = 21_785_568
_BATCH_STATS = 2 * 17_216


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def test_registry_builds_full_size_network_with_pytorch_fid_shapes():
  variables = fid.template()
  assert _count(variables["params"]) == _PARAMS
  assert _count(variables["batch_stats"]) == _BATCH_STATS
  params = variables["params"]
  assert params["Conv2d_1a_3x3"]["conv"]["kernel"].shape == (3, 3, 3, 32)
  assert params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
  assert params["Mixed_7c"]["branch_pool"]["conv"]["kernel"].shape == (1, 1, 2048, 192)
  model = models.build("inception_fid")
  assert isinstance(model, inception.FIDInceptionV3)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                       jnp.zeros((3, 40, 57, 3)))
  assert out.shape == (3, inception.FEATURE_DIM) and out.dtype == jnp.float32


def test_small_input_without_resize_is_refused():
  model = inception.FIDInceptionV3(resize_input=False)
  with pytest.raises(ValueError, match="75"):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), fid.template(),
                   jnp.zeros((1, 74, 80, 3)))


def _random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """pytorch-fid names and layouts (OIHW), random values, plus the ignored
  classifier and step counters."""
  rng = np.random.default_rng(seed)
  state_dict = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in fid._flatten(fid.template()[collection]).items():
      shape = leaf.shape
      if len(shape) == 4:
        shape = (shape[3], shape[2], shape[0], shape[1])
      value = rng.normal(0, 0.1, shape).astype(np.float32)
      if path[-1] == "var":
        value = np.abs(value) + 0.5
      state_dict[fid.torch_name(collection, path)] = value
  state_dict["fc.weight"] = np.zeros((1008, 2048), np.float32)
  state_dict["fc.bias"] = np.zeros((1008,), np.float32)
  state_dict["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.zeros((), np.int64)
  return state_dict


def test_converter_maps_names_and_layouts():
  state_dict = _random_state_dict()
  variables = fid.convert_state_dict(state_dict)
  np.testing.assert_array_equal(
      variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
      state_dict["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      variables["batch_stats"]["Mixed_7c"]["branch1x1"]["bn"]["var"],
      state_dict["Mixed_7c.branch1x1.bn.running_var"])
  np.testing.assert_array_equal(
      variables["params"]["Conv2d_4a_3x3"]["bn"]["scale"],
      state_dict["Conv2d_4a_3x3.bn.weight"])
  assert _count(variables["params"]) == _PARAMS


def test_converter_names_missing_unexpected_and_mismatched():
  state_dict = _random_state_dict()
  del state_dict["Mixed_5b.branch1x1.conv.weight"]
  state_dict["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
  state_dict["Mixed_7a.branch3x3_2.bn.bias"] = np.zeros((321,), np.float32)
  with pytest.raises(fid.FIDWeightsError) as error:
    fid.convert_state_dict(state_dict)
  message = str(error.value)
  assert "Mixed_5b.branch1x1.conv.weight" in message
  assert "AuxLogits.fc.weight" in message
  assert "Mixed_7a.branch3x3_2.bn.bias" in message


def test_weight_files_are_verified(tmp_path):
  missing = tmp_path / fid.WEIGHTS_FILE
  with pytest.raises(FileNotFoundError, match="pytorch-fid/releases"):
    fid.load_weights(str(missing))
  assert fid.WEIGHTS_URL in fid.missing_weights_message()
  state_dict = _random_state_dict()
  # An export records the sha256 of the .pth it came from; a made-up file
  # records another digest and is refused unless the check is waived.
  path = tmp_path / "made_up.npz"
  np.savez(path, **state_dict, __source_sha256__=np.array("0" * 64))
  with pytest.raises(fid.FIDWeightsError, match="sha256"):
    fid.load_weights(str(path))
  variables = fid.load_weights(str(path), expected_sha256="0" * 64)
  assert _count(variables["params"]) == _PARAMS
  unrecorded = tmp_path / "unrecorded.npz"
  np.savez(unrecorded, **state_dict)
  with pytest.raises(fid.FIDWeightsError):
    fid.load_weights(str(unrecorded))
  # Bytes that are not the known .pth are refused before they are parsed.
  fake = tmp_path / "pt_inception.pth"
  fake.write_bytes(b"not the weights")
  with pytest.raises(fid.FIDWeightsError, match=fid.WEIGHTS_SHA256):
    fid.load_weights(str(fake))


# -- distance and moments --------------------------------------------------------


def _scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
  """pytorch-fid's formula with scipy's general matrix square root."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  covmean = np.real(covmean)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_float64():
  rng = np.random.default_rng(0)
  dim = 48
  a = rng.normal(size=(200, dim)) @ rng.normal(size=(dim, dim)) * 0.3
  b = rng.normal(size=(150, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + 0.2
  mu1, sigma1 = a.mean(0), np.cov(a, rowvar=False)
  mu2, sigma2 = b.mean(0), np.cov(b, rowvar=False)
  expected = _scipy_frechet(mu1, sigma1, mu2, sigma2)
  value = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
  assert expected > 1.0
  np.testing.assert_allclose(value, expected, rtol=1e-8)
  # Symmetric in its two sets.
  np.testing.assert_allclose(fid.frechet_distance(mu2, sigma2, mu1, sigma1),
                             expected, rtol=1e-8)


def test_moments_in_masked_batches_equal_numpy_and_self_fid_is_zero():
  rng = np.random.default_rng(1)
  features = rng.gamma(2.0, 0.2, size=(90, 32))
  moments = fid.FeatureMoments(32)
  for start in range(0, 90, 16):
    moments.update(features[start:start + 16])
  assert moments.count == 90
  np.testing.assert_allclose(moments.mean, features.mean(0), rtol=1e-12)
  np.testing.assert_allclose(moments.covariance,
                             np.cov(features, rowvar=False), atol=1e-12)
  mu, sigma = moments.mean, moments.covariance
  assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-9
  # Fewer images than dimensions: singular covariances, still about 0.
  few = fid.FeatureMoments(32)
  few.update(features[:10])
  assert abs(fid.frechet_distance(few.mean, few.covariance, few.mean,
                                  few.covariance)) < 1e-6
  shifted = fid.frechet_distance(mu + 0.5, sigma, mu, sigma)
  np.testing.assert_allclose(shifted, 32 * 0.25, rtol=1e-9)


# -- against PyTorch -------------------------------------------------------------


def _torch_fid_inception():
  """pytorch-fid's FID Inception in PyTorch, up to the 2048-d pool."""
  torch = pytest.importorskip("torch")
  nn, F = torch.nn, torch.nn.functional

  class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
      super().__init__()
      self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
      self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
      return F.relu(self.bn(self.conv(x)))

  def avg(x):  # TensorFlow's pool: padding not counted.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

  class A(nn.Module):
    def __init__(self, cin, pool):
      super().__init__()
      self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
      self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
      self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
      self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
      self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
      self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
      self.branch_pool = BasicConv2d(cin, pool, kernel_size=1)

    def forward(self, x):
      return torch.cat([
          self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
          self.branch_pool(avg(x))], 1)

  class B(nn.Module):
    def __init__(self, cin):
      super().__init__()
      self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
      self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
      self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
      self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
      return torch.cat([
          self.branch3x3(x),
          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
          F.max_pool2d(x, 3, stride=2)], 1)

  class C(nn.Module):
    def __init__(self, cin, c7):
      super().__init__()
      self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
      self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
      self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
      self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
      self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
      self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
      self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
      self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
      self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
      self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
      b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
      bd = self.branch7x7dbl_1(x)
      for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3,
                    self.branch7x7dbl_4, self.branch7x7dbl_5):
        bd = layer(bd)
      return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(avg(x))], 1)

  class D(nn.Module):
    def __init__(self, cin):
      super().__init__()
      self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
      self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
      self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
      self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
      self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
      self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
      b7 = x
      for layer in (self.branch7x7x3_1, self.branch7x7x3_2,
                    self.branch7x7x3_3, self.branch7x7x3_4):
        b7 = layer(b7)
      return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                        F.max_pool2d(x, 3, stride=2)], 1)

  class E(nn.Module):
    def __init__(self, cin, max_pool):
      super().__init__()
      self.max_pool = max_pool
      self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
      self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
      self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
      self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
      self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
      self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
      self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
      self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
      self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
      b3 = self.branch3x3_1(x)
      b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
      bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
      bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
      pooled = (F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool
                else avg(x))
      return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)

  class FIDInception(nn.Module):
    def __init__(self):
      super().__init__()
      self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
      self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
      self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
      self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
      self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
      self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
      self.Mixed_6a = B(288)
      self.Mixed_6b, self.Mixed_6c = C(768, 128), C(768, 160)
      self.Mixed_6d, self.Mixed_6e = C(768, 160), C(768, 192)
      self.Mixed_7a = D(768)
      self.Mixed_7b, self.Mixed_7c = E(1280, False), E(2048, True)
      self.fc = nn.Linear(2048, 1008)

    def forward(self, x, resize):
      if resize:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
      x = 2 * x - 1
      x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
      x = F.max_pool2d(x, 3, stride=2)
      x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
      for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
        x = getattr(self, f"Mixed_{name}")(x)
      return x.mean(dim=(2, 3))

  torch.manual_seed(0)
  net = FIDInception().eval()
  with torch.no_grad():  # Non-trivial batch norm: random statistics.
    for module in net.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
      if isinstance(module, nn.Conv2d):
        # Variance-preserving scale, so 94 layers keep features of order 1.
        fan_in = module.weight[0].numel()
        module.weight.normal_(0, (2.0 / fan_in) ** 0.5)
  return torch, net


def test_features_match_a_pytorch_build_of_pytorch_fid(tmp_path):
  torch, net = _torch_fid_inception()
  path = tmp_path / "made_up_fid_inception.pth"
  torch.save(net.state_dict(), path)
  variables = fid.load_weights(str(path), expected_sha256=None)
  rng = np.random.default_rng(0)
  # 75 x 75 is the smallest size the network takes; without the resize the
  # comparison stays cheap on a CPU.
  images = rng.uniform(0, 1, (2, 75, 75, 3)).astype(np.float32)
  with torch.no_grad():
    expected = net(torch.from_numpy(images.transpose(0, 3, 1, 2)), resize=False).numpy()
  model = inception.FIDInceptionV3(resize_input=False)
  features = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  assert np.abs(expected).mean() > 0.05  # Not a vanishing signal.
  np.testing.assert_allclose(features, expected, atol=1e-4, rtol=1e-4)


def test_resize_matches_pytorch_bilinear():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(2)
  for shape in ((2, 40, 57, 3), (1, 320, 512, 3)):  # Up and down.
    images = rng.uniform(0, 1, shape).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(images.transpose(0, 3, 1, 2)), size=(299, 299),
        mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(inception.resize_bilinear(images), expected,
                               atol=1e-5)
