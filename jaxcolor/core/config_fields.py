"""A config's fields by path: read, filled where missing, and the fields an
older run's config.json lacks.

A run's config.json and an artifact's model.json keep the fields of the
version that wrote them; the fields added to `base_config` since
(`NEWER_FIELDS`) are filled from it when such a config is read back
(jaxcolor/inference/run_loading.py), and only there. The optimizer and
backbone sections fill their own optional fields (`fill_missing`).
"""

import copy
import functools
import re
from typing import Any, Iterable, Mapping

import ml_collections

from jaxcolor.core.configuration import base_config
from jaxcolor.core.errors import ConfigError


# The fields `base_config` gained after its first form (the first training
# run's config.json), so that a config written before one of them lacks it.
# Their values here are what those versions did without them (no EMA, the
# test-time mode 'eval', the same convolutions), so `fill_newer_fields`
# reads such a config back as it ran. Fields of the shared sections that
# only some systems read are theirs to name (`System.newer_fields`, e.g. the
# GAN systems' 'loss.gan_weight'). A field added to `base_config` goes here
# (tests/test_config_defaults.py holds the first form to check it).
NEWER_FIELDS = (
    "evaluation",
    "skip_nonfinite_steps",
    "train_resize_scale",
    "generator_ema_decay",
    "generator_test_mode",
    "profile_steps",
    "conv_impl",
    "generator_ema_ramp",
    "cpu_conv_library",
    "per_device_batch_size",
)


class MissingField(ConfigError):
  """A field that the code reads and the config lacks; `path` names it
  ('generator', 'loss.discriminator_fake')."""

  def __init__(self, path: str, reader: str):
    super().__init__(f"config.{path} is missing: {reader} reads it.")
    self.path = path


def missing_field(error: BaseException,
                  config: ml_collections.ConfigDict) -> str | None:
  """'generator' or 'generator.name': the field of `config` whose lookup
  raised `error` (a KeyError or AttributeError), or None when `error` came
  from elsewhere.

  ml_collections raises from the ConfigDict looked in, so the innermost
  frame's `self` is that section; its place in `config` gives the path.
  """
  frame = error.__traceback__
  while frame is not None and frame.tb_next is not None:
    frame = frame.tb_next
  section = frame.tb_frame.f_locals.get("self") if frame else None
  key = re.search(r"'([^']+)'", str(error))
  if key is None or not isinstance(section, ml_collections.ConfigDict):
    return None

  def place(node, prefix):
    if node is section:
      return prefix
    for name, child in node.items():
      if isinstance(child, ml_collections.ConfigDict):
        found = place(child, prefix + (name,))
        if found is not None:
          return found
    return None

  prefix = place(config, ())
  if prefix is None or key.group(1) in section:
    return None
  return ".".join(prefix + (key.group(1),))


def field(config: ml_collections.ConfigDict, path: str) -> Any:
  """The value at dotted `path` ('loss.gan_weight') of `config`."""
  return functools.reduce(lambda section, key: section[key],
                          path.split("."), config)


def fill_missing(config: ml_collections.ConfigDict,
                 defaults: Mapping[str, Any]) -> list[str]:
  """Sets each field of `defaults` ({dotted path: value}) that `config`
  lacks, in place, a locked config too; returns the paths it set.

  A path whose section is missing is left alone: a missing section is a
  fault of its own, named where it is read. Sections are copied, so no two
  configs share one.
  """
  filled = []
  for path, value in defaults.items():
    *parents, key = path.split(".")
    section = config
    for parent in parents:
      section = section[parent] if parent in section else None
      if not isinstance(section, ml_collections.ConfigDict):
        break
    if not isinstance(section, ml_collections.ConfigDict) or key in section:
      continue
    with section.unlocked():
      section[key] = copy.deepcopy(value)
    filled.append(path)
  return filled


def fill_newer_fields(config: ml_collections.ConfigDict,
                      system_fields: Iterable[str] = ()) -> list[str]:
  """Gives a config written by an earlier version the fields added since
  (`NEWER_FIELDS`, and `system_fields`, its system's `newer_fields`), each
  at its `base_config` value; in place. Returns the paths it set.

  For configs read back (jaxcolor/inference/run_loading.py); a config file
  starts from `base_config` and has them all.
  """
  base = base_config()
  return fill_missing(config, {path: field(base, path) for path in
                               (*NEWER_FIELDS, *system_fields)})
