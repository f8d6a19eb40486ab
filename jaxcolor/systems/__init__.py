"""Systems: how each paper's training step is composed from networks.

`config.system` names one; `create(config)` builds it. Adding a system is one
module here and one entry below.
"""

import importlib

import ml_collections

from jaxcolor.core import config_fields
from jaxcolor.core.errors import ConfigError, suggest
from jaxcolor.systems.base import System

# name -> "module:Class", relative to this package.
_SYSTEMS = {
    "pix2pix": "pix2pix:Pix2Pix",
    "pix2pix_improver": "pix2pix_improver:Pix2PixImprover",
    "iizuka": "iizuka:Iizuka",
    "resnet18_unet": "staged:StagedPix2Pix",
    "classify": "classifier:Classifier",
}


def names() -> list[str]:
  return sorted(_SYSTEMS)


def get_class(name: str) -> type[System]:
  """The class of system `name`, not yet built: its `config_fields` are
  what a config is validated with before anything reads it."""
  if name not in _SYSTEMS:
    raise ConfigError(
        f"config.system={name!r} is unknown{suggest(name, _SYSTEMS)}; "
        f"systems: {', '.join(names())}.")
  module_name, class_name = _SYSTEMS[name].split(":")
  module = importlib.import_module(f"{__name__}.{module_name}")
  return getattr(module, class_name)


def create(config: ml_collections.ConfigDict,
           platform: str | None = None) -> System:
  """The system `config.system`, built from `config` (not yet validated),
  for programs compiled for `platform` (default JAX's default backend).

  Systems read their fields as they stand (no fallback values): one the
  config lacks is a `config_fields.MissingField` naming it.
  """
  cls = get_class(config.system)
  try:
    return cls(config, platform)
  except (KeyError, AttributeError) as e:
    path = config_fields.missing_field(e, config)
    if path is None:  # Not a lookup in this config: a fault of the code.
      raise
    raise config_fields.MissingField(path, f"the {config.system} system"
                                     ) from None
