"""Frechet Inception Distance: weights, features over a split, the distance.

FID (Heusel et al. 2017, "GANs trained by a two time-scale update rule
converge to a local Nash equilibrium") compares two image sets through the
2048-d pool features of the TensorFlow Inception graph: with means mu and
covariances S of the two feature sets,

  FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).

Numbers are comparable with pytorch-fid (and with papers that used it or the
TensorFlow original) only with its weights, `pt_inception-2015-12-05-6726825d.pth`
from https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/,
whose sha256 is checked at every load. Without that file there is no FID:
nothing here falls back to other weights.

Files: the .pth needs PyTorch to read (`torch.load(weights_only=True)`);
without PyTorch, export it once where it is installed:

  python -c "from jaxcolor.evaluation import fid; fid.export_npz(
      'pt_inception-2015-12-05-6726825d.pth', 'fid_inception.npz')"

The export records the .pth's verified sha256, and loading it checks that
record.

Features are accumulated as float64 running sums (count, sum, sum of outer
products) per image set, so memory does not grow with the split; the
covariance is the unbiased one (divided by n - 1), as pytorch-fid's
`np.cov(rowvar=False)`. FID is biased upwards for small sets and is reported
with its image count: papers use 10,000 or 50,000 images; with fewer than
2,048 the covariance is singular (the distance is still defined).
"""

import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from jaxcolor.core import parallel
from jaxcolor.core.errors import JobError
from jaxcolor.models import inception
from jaxcolor.models import torchvision_import

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
               f"fid_weights/{WEIGHTS_FILE}")
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
# Key of the source file's sha256 inside an .npz export.
_SOURCE_SHA256_KEY = "__source_sha256__"
# Names in the state dict with no counterpart in the feature network: the
# 1008-class classifier and PyTorch's batch-norm step counters.
_IGNORED_PREFIXES = ("fc.",)
_IGNORED_SUFFIXES = (".num_batches_tracked",)



class FIDWeightsError(JobError, ValueError):
  """The FID weight file is missing, altered or not pytorch-fid's network."""


# -- weights -------------------------------------------------------------------


def missing_weights_message() -> str:
  return (f"FID not computed: no Inception weights. Download {WEIGHTS_URL} "
          f"(sha256 {WEIGHTS_SHA256[:16]}...) and pass "
          f"--config.evaluation.fid_weights=/path/to/{WEIGHTS_FILE}.")


@functools.cache
def template() -> dict[str, Any]:
  """Shapes and dtypes of the feature network's variables (no FLOPs)."""
  model = inception.FIDInceptionV3()
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0),
                         jnp.zeros((1, inception.INPUT_SIZE,
                                    inception.INPUT_SIZE, 3)), train=False))


# Nested variable dicts <-> {path tuple: array}.
_flatten = traverse_util.flatten_dict
_unflatten = traverse_util.unflatten_dict


def torch_name(collection: str, path: tuple[str, ...]) -> str:
  """('params', ('Mixed_6b', 'branch7x7_2', 'conv', 'kernel')) ->
  'Mixed_6b.branch7x7_2.conv.weight'."""
  return ".".join(path[:-1] + (torchvision_import.LEAF_TO_TORCH[(collection, path[-1])],))


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """pytorch-fid's FID Inception state dict -> `FIDInceptionV3` variables.

  Convolutions go from OIHW to HWIO; batch norm weight, bias, running_mean
  and running_var become params scale/bias and batch_stats mean/var.

  Raises:
    FIDWeightsError: a missing, unexpected or mis-shaped name (the first of
      each kind is named, with how many there are).
  """
  expected = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in _flatten(template()[collection]).items():
      expected[torch_name(collection, path)] = (collection, path, leaf)
  ignored = lambda n: (n.startswith(_IGNORED_PREFIXES)
                       or n.endswith(_IGNORED_SUFFIXES))
  missing = [n for n in expected if n not in state_dict]
  unexpected = [n for n in state_dict if n not in expected and not ignored(n)]
  converted, mismatched = {}, []
  for name, (collection, path, leaf) in expected.items():
    if name not in state_dict:
      continue
    value = np.asarray(state_dict[name], np.float32)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    if value.shape != tuple(leaf.shape):
      mismatched.append(f"{name} is {np.shape(state_dict[name])}, expected "
                        f"{tuple(leaf.shape)} after conversion")
      continue
    converted[(collection,) + path] = value
  if missing or unexpected or mismatched:
    problems = []
    if missing:
      problems.append(f"{len(missing)} missing, first {missing[0]!r}")
    if unexpected:
      problems.append(f"{len(unexpected)} unexpected, first {unexpected[0]!r}")
    if mismatched:
      problems.append(f"{len(mismatched)} mismatched, first {mismatched[0]}")
    raise FIDWeightsError(
        "The state dict is not pytorch-fid's FID Inception: "
        + "; ".join(problems) + ".")
  return _unflatten(converted)


def _check_sha256(path: str, digest: str | None, expected: str | None) -> None:
  if expected is not None and digest != expected:
    raise FIDWeightsError(
        f"{path}: sha256 {digest} is not that of pytorch-fid's {WEIGHTS_FILE} "
        f"({expected}); the file is corrupt, truncated or another network's. "
        f"Download it again from {WEIGHTS_URL}.")


def load_weights(path: str, *,
                 expected_sha256: str | None = WEIGHTS_SHA256) -> dict[str, Any]:
  """Reads, verifies and converts the FID Inception weights.

  Args:
    path: pytorch-fid's .pth (needs PyTorch) or an `export_npz` export.
    expected_sha256: the .pth's sha256 (for an export: the one it records);
      None skips the check (tests with weights they made).

  Returns:
    `FIDInceptionV3` variables {'params', 'batch_stats'} of numpy arrays.

  Raises:
    FileNotFoundError: no file at `path` (the message says where to get it).
    FIDWeightsError: wrong digest or not the FID network.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"No FID weight file at {path}; download {WEIGHTS_URL}.")
  if path.endswith(".npz"):
    try:
      state_dict = torchvision_import.read_npz(path)
    except ValueError as e:
      raise FIDWeightsError(str(e)) from None
    recorded = state_dict.pop(_SOURCE_SHA256_KEY, None)
    _check_sha256(path, None if recorded is None else str(recorded), expected_sha256)
  else:
    _check_sha256(path, torchvision_import.sha256_of(path), expected_sha256)
    try:
      state_dict = torchvision_import.load_state_dict(path)
    except ValueError as e:  # A hash in the name that the bytes do not match.
      raise FIDWeightsError(str(e)) from None
  return convert_state_dict(state_dict)


def export_npz(pth_path: str, npz_path: str, *,
               expected_sha256: str | None = WEIGHTS_SHA256) -> None:
  """Writes the .pth's arrays and verified sha256 to an .npz (no PyTorch
  needed to read it)."""
  digest = torchvision_import.sha256_of(pth_path)
  _check_sha256(pth_path, digest, expected_sha256)
  state_dict = torchvision_import.load_state_dict(pth_path)
  np.savez(npz_path, **state_dict, **{_SOURCE_SHA256_KEY: np.array(digest)})


# -- statistics and distance ---------------------------------------------------


class FeatureMoments:
  """Running float64 count, sum and sum of outer products of features."""

  def __init__(self, dim: int = inception.FEATURE_DIM):
    self.count = 0
    self.total = np.zeros((dim,), np.float64)
    self.outer = np.zeros((dim, dim), np.float64)

  def update(self, features: np.ndarray) -> None:
    """Adds the rows of [N, dim] features."""
    features = np.asarray(features, np.float64)
    self.count += len(features)
    self.total += features.sum(axis=0)
    self.outer += features.T @ features

  @property
  def mean(self) -> np.ndarray:
    return self.total / self.count

  @property
  def covariance(self) -> np.ndarray:
    """Unbiased covariance (n - 1), as `np.cov(features, rowvar=False)`."""
    if self.count < 2:
      raise ValueError(f"A covariance needs 2 or more images; got {self.count}.")
    mean = self.mean
    return (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)


class FrechetReference:
  """One Gaussian (mu, S) to measure others against, its S^(1/2) computed once.

  Tr((S S_x)^(1/2)) is the sum of the square roots of the eigenvalues of
  S S_x, which are those of the symmetric S^(1/2) S_x S^(1/2): symmetric
  eigendecompositions instead of a general matrix square root, so no complex
  round-off appears (pytorch-fid takes the real part of
  `scipy.linalg.sqrtm` instead), and a set of outputs scored against the
  same truth costs one decomposition each plus one for the truth.
  Eigenvalues that round-off makes slightly negative are taken as 0.
  """

  def __init__(self, mu: np.ndarray, sigma: np.ndarray):
    self.mu = np.asarray(mu, np.float64)
    sigma = np.asarray(sigma, np.float64)
    self.sigma = 0.5 * (sigma + sigma.T)
    values, vectors = np.linalg.eigh(self.sigma)
    self._root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T

  def distance(self, mu: np.ndarray, sigma: np.ndarray) -> float:
    """||mu - mu_ref||^2 + Tr(S + S_ref - 2 (S S_ref)^(1/2)), float64."""
    sigma = np.asarray(sigma, np.float64)
    product = self._root @ sigma @ self._root
    product_values = np.linalg.eigvalsh(0.5 * (product + product.T))
    trace_root = np.sum(np.sqrt(np.clip(product_values, 0.0, None)))
    diff = np.asarray(mu, np.float64) - self.mu
    return float(diff @ diff + np.trace(sigma) + np.trace(self.sigma)
                 - 2.0 * trace_root)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64."""
  return FrechetReference(mu2, sigma2).distance(mu1, sigma1)


# -- over an evaluation split --------------------------------------------------


class InceptionFeatures:
  """The FID network jitted over the mesh: RGB [B, H, W, 3] -> [B, 2048].

  `compiler_options`: `jax.jit`'s, e.g. the run's
  `backends.compiler_options(config, platform)` (on the CPU, XLA's own
  convolution kernels, the faster ones for this network:
  docs/benchmarks.md, "Fifth round").
  """

  def __init__(self, variables: Mapping[str, Any], mesh,
               model: Any | None = None,
               compiler_options: dict[str, str] | None = None):
    self.model = model if model is not None else inception.FIDInceptionV3()
    self.variables = jax.device_put(dict(variables), parallel.replicated(mesh))
    self._apply = jax.jit(
        lambda variables, rgb: self.model.apply(variables, rgb, train=False),
        in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
        out_shardings=parallel.batch_sharded(mesh),
        compiler_options=compiler_options)

  def __call__(self, rgb: jax.Array) -> jax.Array:
    return self._apply(self.variables, rgb)


class FIDAccumulator:
  """Moments of every image set of an evaluation; FIDs against the truth.

  `features` maps batch-sharded RGB [B, H, W, 3] in [0, 1] to [B, D]
  (an `InceptionFeatures`, or any stand-in with the same contract).
  """
  REFERENCE = "truth"

  def __init__(self, features):
    self.features = features
    self.moments: dict[str, FeatureMoments] = {}

  def reset(self) -> None:
    self.moments = {}

  def update(self, images: Mapping[str, jax.Array], mask: jax.Array) -> None:
    """Adds the real images (mask True) of each set: {name: RGB [B, ...]}."""
    keep = np.asarray(multihost_utils.process_allgather(mask, tiled=True),
                      bool)
    for name, rgb in images.items():
      rows = multihost_utils.process_allgather(self.features(rgb), tiled=True)
      rows = np.asarray(rows)[keep]
      if name not in self.moments:
        self.moments[name] = FeatureMoments(rows.shape[-1])
      self.moments[name].update(rows)

  def result(self) -> dict[str, Any]:
    """{'<set>_fid': FID(set, truth)} for every set but the truth, and
    'fid_num_images'; with fewer than 2 images, 'fid_skipped' (the reason)."""
    truth = self.moments[self.REFERENCE]
    if truth.count < 2:
      return {"fid_skipped": f"FID needs 2 or more images; the split gave "
                             f"{truth.count}."}
    reference = FrechetReference(truth.mean, truth.covariance)
    out = {f"{name}_fid": reference.distance(moments.mean, moments.covariance)
           for name, moments in self.moments.items()
           if name != self.REFERENCE}
    out["fid_num_images"] = truth.count
    return out
