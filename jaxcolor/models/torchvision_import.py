"""ImageNet ResNet-18 weights from torchvision, converted to our Flax trees.

Papers 001 (section 3.3) and 003 (section 6.5) start the colorization
generator from torchvision's ImageNet ResNet-18. The steps:

  state_dict = load_torchvision_resnet18("resnet18-f37072fd.pth")
  resnet = convert_resnet18(state_dict, include_fc=False)
  unet_variables = load_encoder_into_unet(unet_variables, resnet)

Files: torchvision's current `resnet18-f37072fd.pth` (IMAGENET1K_V1), the
older `resnet18-5c106cde.pth`, or a `.npz` / `.safetensors` export of the
same state dict (names as torchvision's, arrays as PyTorch's: conv OIHW, fc
[out, in]). Nothing pickled is ever executed: `.pth` goes through
`torch.load(weights_only=True)`, `.npz` through `allow_pickle=False`.

torchvision names a file `<name>-<first 8 hex digits of its sha256>.<ext>`
and torch.hub checks that prefix after download; we check it at every load,
for any file named that way. An export must therefore not keep the name of
the file it came from (`resnet18-f37072fd.npz` would fail: its bytes differ).

Without torch, export once where torch is installed:
  python -c "import numpy as np, torch; sd = torch.load('resnet18-f37072fd.pth',
  weights_only=True); np.savez('resnet18_imagenet.npz',
  **{k: v.numpy() for k, v in sd.items()})"
"""

import functools
import hashlib
import os
import pickle
import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxcolor.models.resnet import ResNet18

StateDict = dict[str, np.ndarray]

# torch.hub's rule for hashes in file names (`HASH_REGEX` in torch/hub.py).
_HASHED_NAME = re.compile(r"^.+-(?P<prefix>[0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_TORCH_EXTENSIONS = (".pth", ".pt", ".bin")
_EXTENSIONS = _TORCH_EXTENSIONS + (".npz", ".safetensors")
# torch >= 0.4 counts batch-norm updates; that counter has no Flax
# counterpart and plays no part in evaluation.
_IGNORED_SUFFIX = ".num_batches_tracked"


def sha256_of(path: str) -> str:
  """The file's sha256, as hex."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def check_sha256_prefix(path: str,
                        expected_prefix: Optional[str] = None) -> Optional[str]:
  """Checks the file against `expected_prefix` and the hash in its name.

  Returns:
    The file's sha256 when anything was checked, else None.

  Raises:
    ValueError: a prefix does not match; the message names the file, the
      expected prefix and the actual digest.
  """
  expected = []
  if expected_prefix is not None:
    expected.append((expected_prefix.lower(), "expected_sha256_prefix"))
  match = _HASHED_NAME.match(os.path.basename(path))
  if match:
    expected.append((match.group("prefix"), "the hash in the file name"))
  if not expected:
    return None
  actual = sha256_of(path)
  for prefix, source in expected:
    if not actual.startswith(prefix):
      raise ValueError(
          f"sha256 mismatch for {path}: expected a digest starting with "
          f"{prefix!r} ({source}), got {actual}. The file is corrupt, "
          f"truncated or a different file; an export (.npz, .safetensors) "
          f"must not keep the hashed name of the file it came from.")
  return actual


def load_state_dict(path: str, *,
                    expected_sha256_prefix: Optional[str] = None) -> StateDict:
  """Reads a PyTorch state dict (.pth/.pt/.bin, .npz, .safetensors).

  Args:
    path: the file.
    expected_sha256_prefix: hex prefix the file's sha256 must start with;
      checked in addition to a hash in the file name (see module docstring).

  Returns:
    {torchvision name: numpy array}, in PyTorch's layouts.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No weight file at {path}.")
  ext = os.path.splitext(path)[1].lower()
  if ext not in _EXTENSIONS:
    raise ValueError(
        f"{path}: unsupported extension {ext!r}; expected one of "
        f"{', '.join(_EXTENSIONS)}.")
  check_sha256_prefix(path, expected_sha256_prefix)
  if ext == ".npz":
    return read_npz(path)
  if ext == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError as e:
      raise ImportError(
          f"Reading {path} needs the `safetensors` package "
          f"(pip install safetensors), or export the weights to .npz.") from e
    return dict(load_file(path))
  try:
    import torch
  except ImportError as e:
    raise ImportError(
        f"Reading {path} needs PyTorch (pip install torch); without it, "
        f"export the state dict to .npz once where torch is installed (see "
        f"jaxcolor/models/torchvision_import.py).") from e
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    # torch's message runs over several lines; its reason is on one.
    reason = next((line.strip().split(". ")[0] for line in str(e).splitlines()
                   if "WeightsUnpickler error" in line), "not a state dict")
    raise ValueError(
        f"{path} holds pickled objects other than tensors; they are never "
        f"unpickled (torch.load(weights_only=True): {reason}).") from None
  if not isinstance(loaded, Mapping) or not all(
      isinstance(v, torch.Tensor) for v in loaded.values()):
    raise ValueError(
        f"{path} does not hold a state dict (a mapping of names to tensors); "
        f"got {type(loaded).__name__}.")
  return {name: value.detach().cpu().numpy() for name, value in loaded.items()}


def read_npz(path: str) -> StateDict:
  """An .npz's arrays, without unpickling anything (allow_pickle=False)."""
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {name: archive[name] for name in archive.files}
  except ValueError as e:  # Object arrays, or a pickle named .npz.
    raise ValueError(
        f"{path} is not an .npz of plain arrays ({e}); pickled objects in "
        "weight files are never loaded.") from None


def load_torchvision_resnet18(
    path: str, *, expected_sha256_prefix: Optional[str] = None) -> StateDict:
  """Reads torchvision's ImageNet ResNet-18 state dict (see module docstring).

  Known files: `resnet18-f37072fd.pth` (current torchvision IMAGENET1K_V1)
  and `resnet18-5c106cde.pth` (older torchvision); both names carry their
  sha256 prefix, which is verified.
  """
  state_dict = load_state_dict(
      path, expected_sha256_prefix=expected_sha256_prefix)
  if not {"conv1.weight", "layer4.1.bn2.weight"} <= set(state_dict):
    raise ValueError(
        f"{path} is not a torchvision ResNet state dict: it lacks "
        f"'conv1.weight' or 'layer4.1.bn2.weight'; its first names are "
        f"{sorted(state_dict)[:5]}.")
  return state_dict


# ---------------------------------------------------------------------------
# Name and layout mapping.

LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_INDEXED_MODULE = re.compile(r"^(layer\d+|downsample)_(\d+)$")


# Nested variable dicts <-> {path tuple: array}.
_flatten = traverse_util.flatten_dict
_unflatten = traverse_util.unflatten_dict


def torch_name(collection: str, path: tuple[str, ...]) -> str:
  """The torchvision state-dict name of a ResNet18 variable.

  ('params', ('body', 'layer2_0', 'downsample_0', 'kernel')) ->
  'layer2.0.downsample.0.weight'; see resnet.py for the whole table.
  """
  modules = path[1:-1] if path[0] == "body" else path[:-1]
  parts = [_INDEXED_MODULE.sub(r"\1.\2", m) for m in modules]
  leaf = LEAF_TO_TORCH.get((collection, path[-1]))
  if leaf is None:
    raise ValueError(
        f"No torchvision counterpart for {collection}/{'/'.join(path)}.")
  return ".".join(parts + [leaf])


def _describe(shape) -> str:
  return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def resnet18_template(input_channels: int = 3, num_classes: int = 1000,
                      base_features: int = 64) -> dict[str, Any]:
  """Shapes and dtypes of `ResNet18` variables, computed without any FLOPs."""
  model = ResNet18(num_classes=num_classes, input_channels=input_channels,
                   base_features=base_features)
  return jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0),
      jnp.zeros((1, 64, 64, input_channels), jnp.float32))


def convert_resnet18(state_dict: Mapping[str, np.ndarray],
                     variables_template: Optional[Mapping[str, Any]] = None, *,
                     input_channels: int = 3,
                     include_fc: bool = True) -> dict[str, Any]:
  """torchvision ResNet-18 state dict -> `ResNet18` variables.

  Conv weights go from OIHW to HWIO, the fc weight is transposed, batch-norm
  weight/bias/running_mean/running_var become params scale/bias and
  batch_stats mean/var. With input_channels == 1 the RGB stem is summed over
  its input channels (exact on gray images replicated to RGB; see
  resnet_unet.py).

  Args:
    state_dict: {torchvision name: array}, e.g. from
      `load_torchvision_resnet18`.
    variables_template: `ResNet18` variables or their `jax.eval_shape`
      (names, shapes and dtypes are used, never values); None builds one for
      `input_channels` and 1000 classes.
    input_channels: the stem's input channels in the result (3 or 1); must
      match the template's stem.
    include_fc: False leaves out the classifier (`fc.*` names are then
      ignored), e.g. for the U-Net encoder.

  Returns:
    {'params': {'body': ..., 'fc': ...}, 'batch_stats': {'body': ...}} of
    numpy arrays in the template's dtypes.

  Raises:
    ValueError: a missing, unexpected or mismatched name; the message gives
      the first of each kind with its shapes, and how many there are.
  """
  if variables_template is None:
    variables_template = resnet18_template(input_channels=input_channels)
  template = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in _flatten(variables_template.get(collection, {})).items():
      if include_fc or path[0] != "fc":
        template[(collection,) + path] = leaf
  stem_key = ("params", "body", "conv1", "kernel")
  if stem_key not in template:
    raise ValueError(
        "variables_template is not ResNet18 variables: no "
        "params/body/conv1/kernel.")
  template_channels = template[stem_key].shape[2]
  if template_channels != input_channels:
    raise ValueError(
        f"input_channels={input_channels} but the template's stem takes "
        f"{template_channels} channels.")

  names = {torch_name(key[0], key[1:]): key for key in template}
  ignored = lambda n: n.endswith(_IGNORED_SUFFIX) or (
      not include_fc and n.startswith("fc."))
  missing = [n for n in names if n not in state_dict]
  unexpected = [n for n in state_dict if n not in names and not ignored(n)]

  converted, mismatched = {}, []
  for name, key in names.items():
    if name not in state_dict:
      continue
    value = np.asarray(state_dict[name])
    if value.ndim == 4:                      # OIHW -> HWIO
      if name == "conv1.weight" and value.shape[1] != input_channels:
        if input_channels == 1:
          value = value.sum(axis=1, keepdims=True)
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:                    # fc: [out, in] -> [in, out]
      value = value.T
    expected = tuple(template[key].shape)
    if value.shape != expected:
      mismatched.append(
          f"{name}: {_describe(np.shape(state_dict[name]))} in the state dict "
          f"-> {_describe(value.shape)} converted, but "
          f"{'/'.join(key)} is {_describe(expected)}")
      continue
    converted[key] = value.astype(template[key].dtype)

  if missing or unexpected or mismatched:
    problems = []
    if missing:
      key = names[missing[0]]
      problems.append(
          f"{len(missing)} missing, first {missing[0]!r} (for {'/'.join(key)}, "
          f"{_describe(template[key].shape)})")
    if unexpected:
      problems.append(
          f"{len(unexpected)} unexpected, first {unexpected[0]!r} "
          f"({_describe(np.shape(state_dict[unexpected[0]]))})")
    if mismatched:
      problems.append(f"{len(mismatched)} mismatched, first {mismatched[0]}")
    raise ValueError(
        "The state dict does not fit ResNet18 (torchvision resnet18 names "
        "expected): " + "; ".join(problems) + ".")
  return _unflatten(converted)


def load_encoder_into_unet(
    unet_variables: Mapping[str, Any],
    resnet_variables: Mapping[str, Any]) -> dict[str, Any]:
  """Places ResNet18 body weights into a ResNet18UNet's encoder.

  Works with `convert_resnet18` output and with variables of our own
  `ResNet18` classifier (checkpoints), whose body has the same tree. An RGB
  stem is summed over its input channels when the U-Net takes one channel.

  Args:
    unet_variables: `ResNet18UNet` variables ('params', 'batch_stats').
    resnet_variables: `ResNet18` variables; only 'body' is used.

  Returns:
    A copy of `unet_variables` with params/encoder and batch_stats/encoder
    replaced (numpy arrays in the U-Net's dtypes); everything else is shared.

  Raises:
    ValueError: the trees or shapes differ (the first difference is named).
  """
  result = {collection: dict(tree)
            for collection, tree in unet_variables.items()}
  for collection in ("params", "batch_stats"):
    if "encoder" not in unet_variables.get(collection, {}):
      raise ValueError(f"unet_variables have no {collection}/encoder.")
    if "body" not in resnet_variables.get(collection, {}):
      raise ValueError(f"resnet_variables have no {collection}/body.")
    target = _flatten(unet_variables[collection]["encoder"])
    source = _flatten(resnet_variables[collection]["body"])
    only_target = sorted(set(target) - set(source))
    only_source = sorted(set(source) - set(target))
    if only_target or only_source:
      first = (f"encoder/{'/'.join(only_target[0])} has no source"
               if only_target else
               f"body/{'/'.join(only_source[0])} has no place in the encoder")
      raise ValueError(
          f"{collection}: the ResNet-18 body and the U-Net encoder differ "
          f"({len(only_target)} names only in the encoder, {len(only_source)} "
          f"only in the body): {first}.")
    loaded = {}
    for path, leaf in target.items():
      value = np.asarray(source[path])
      if path == ("conv1", "kernel") and value.shape[2] != leaf.shape[2]:
        if leaf.shape[2] != 1:
          raise ValueError(
              f"Cannot adapt a {value.shape[2]}-channel stem to "
              f"{leaf.shape[2]} channels (only to 1, by summing).")
        value = value.sum(axis=2, keepdims=True)
      if value.shape != tuple(leaf.shape):
        raise ValueError(
            f"{collection}/encoder/{'/'.join(path)} is "
            f"{_describe(leaf.shape)} but the body's is "
            f"{_describe(value.shape)} (was the U-Net built with another "
            f"base_features?).")
      loaded[path] = value.astype(leaf.dtype)
    result[collection] = dict(result[collection])
    result[collection]["encoder"] = _unflatten(loaded)
  return result
