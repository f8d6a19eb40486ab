"""Where the ResNet-18 U-Net's encoder gets its pretrained weights.

Papers 001 (section 3.3) and 003 (section 6.5) start the generator's
down-sampling path from an ImageNet-trained ResNet-18. `config.backbone`:

  source='random'       no pretrained weights: torchvision's random init.
                        Not the papers' method, so it must be asked for by
                        name: an unset source ('') is an error that says
                        how to supply weights, and a 'random' run logs a
                        warning. ('none' is kept as a synonym of 'random'.)
  source='torchvision'  torchvision's ImageNet ResNet-18 state dict: `path`
                        is resnet18-f37072fd.pth (reading it needs torch) or
                        an .npz / .safetensors export of it. Its sha256 is
                        checked against the 8 hex digits of a torch.hub file
                        name and against `sha256` (a hex prefix) when given.
  source='checkpoint'   our own classification pretraining
                        (configs/resnet18_classify.py): `path` is that run's
                        workdir (or its checkpoints/ folder); the newest
                        checkpoint's ResNet-18 is used.

`load_resnet18` returns ResNet18 variables (numpy); the system puts their
body into the encoder with `torchvision_import.load_encoder_into_unet`,
which sums an RGB stem over its channels for the one-channel L input. Every
problem (missing file, sha256 mismatch, names or shapes that do not fit) is
a ConfigError naming `config.backbone.*`, raised before anything compiles.
"""

import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxcolor.core.choices import BACKBONE_SOURCES
from jaxcolor.core.config_fields import fill_missing
from jaxcolor.core.errors import ConfigError, suggest
from jaxcolor.models import torchvision_import
from jaxcolor.training import checkpointing
from jaxcolor.training import rundir

# The state key of the ResNet-18 in a classify run's checkpoint
# (jaxcolor.systems.classifier trains it under this name).
CLASSIFY_NETWORK = "classifier"
_RANDOM = ("random", "none")
Variables = dict[str, Any]
# The fields of `config.backbone` and their defaults: no path, no sha256
# prefix, and no source (refused by `check_config`, which says how to name
# one).
FIELDS = {"source": "", "path": "", "sha256": ""}


def check_config(backbone: ml_collections.ConfigDict) -> None:
  """The fields alone (no file is read); fields the section leaves out are
  set to their defaults (`FIELDS`), in place."""
  for key in backbone.keys():
    if key not in FIELDS:
      raise ConfigError(f"Unknown config field 'backbone.{key}'"
                        f"{suggest(key, FIELDS)}; the backbone has: "
                        f"{', '.join(FIELDS)}.")
  fill_missing(backbone, FIELDS)
  source = backbone.source
  if not source:
    raise ConfigError(
        "config.backbone.source is unset: papers 001 and 003 start the "
        "encoder from a pretrained ResNet-18. Set "
        "--config.backbone.source=torchvision --config.backbone.path="
        "resnet18-f37072fd.pth (torchvision's ImageNet weights), or "
        "--config.backbone.source=checkpoint --config.backbone.path=RUN (a "
        "configs/resnet18_classify.py run), or "
        "--config.backbone.source=random to train from random weights.")
  if source not in BACKBONE_SOURCES:
    raise ConfigError(
        f"config.backbone.source={source!r} is invalid: one of "
        f"{', '.join(BACKBONE_SOURCES)}.")
  if source not in _RANDOM and not backbone.path:
    raise ConfigError(
        f"config.backbone.path is empty: source={source!r} needs "
        + ("a weight file (resnet18-f37072fd.pth or an .npz export)"
           if source == "torchvision" else
           "the workdir of a configs/resnet18_classify.py run") + ".")


def load_resnet18(backbone: ml_collections.ConfigDict) -> Variables | None:
  """ResNet18 variables {'params', 'batch_stats'} (numpy), or None for 'random'.

  Raises:
    ConfigError: the file or checkpoint is missing or does not hold a
      ResNet-18 (the message names the key, the path and the problem).
  """
  check_config(backbone)
  source, path = backbone.source, backbone.path
  if source in _RANDOM:
    logging.warning(
        "config.backbone.source=%r: the ResNet-18 encoder starts from "
        "random weights, not the pretrained ones of papers 001 and 003.",
        source)
    return None
  path = str(pathlib.Path(path).expanduser())
  if source == "torchvision":
    return _load_torchvision(path, backbone.sha256 or None)
  return read_classifier_checkpoint(path)


def _load_torchvision(path: str, sha256_prefix: str | None) -> Variables:
  try:
    state_dict = torchvision_import.load_torchvision_resnet18(
        path, expected_sha256_prefix=sha256_prefix)
    return torchvision_import.convert_resnet18(state_dict, include_fc=False)
  except (OSError, ValueError, ImportError) as e:
    raise ConfigError(f"config.backbone.path={path!r}: {e}") from None


def _checkpoint_folder(path: str) -> pathlib.Path:
  root = pathlib.Path(path)
  if not root.is_dir():
    raise ConfigError(
        f"config.backbone.path={path!r} does not exist: give the workdir of a "
        "configs/resnet18_classify.py run.")
  run_dir = rundir.RunDir(root)
  return run_dir.checkpoint_dir if run_dir.checkpoint_dir.is_dir() else root


def read_classifier_checkpoint(path: str) -> Variables:
  """The ResNet-18 of the newest checkpoint of a classify run.

  Read with the shapes and dtypes stored in the checkpoint itself, onto one
  local device, so neither the classify run's config nor its device count
  matters.
  """
  folder = _checkpoint_folder(path)
  checkpointer = checkpointing.Checkpointer(folder, keep=1, asynchronous=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise ConfigError(
          f"config.backbone.path={path!r}: no checkpoint in {folder}; train "
          "configs/resnet18_classify.py there first.")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = checkpointer.stored_target(step, device)
    if CLASSIFY_NETWORK not in target or "params" not in target[CLASSIFY_NETWORK]:
      raise ConfigError(
          f"config.backbone.path={path!r}: the checkpoint {folder / str(step)} "
          f"holds no '{CLASSIFY_NETWORK}' network ({', '.join(target)}); is it "
          "a configs/resnet18_classify.py run?")
    network = checkpointer.restore(step, target)[CLASSIFY_NETWORK]
  finally:
    checkpointer.close()
  return {"params": jax.tree.map(np.asarray, network["params"]),
          "batch_stats": jax.tree.map(np.asarray,
                                      network.get("batch_stats") or {})}


def into_unet(unet_variables: Variables, resnet: Variables, *,
              path: str = "") -> Variables:
  """`load_encoder_into_unet` with its errors as ConfigError.

  Works on real variables and on their `jax.eval_shape` (to check the fit
  before anything compiles).
  """
  try:
    return torchvision_import.load_encoder_into_unet(unet_variables, resnet)
  except ValueError as e:
    raise ConfigError(
        f"config.backbone.path={path!r} does not fit config.generator: "
        f"{e}") from None
