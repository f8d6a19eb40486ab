"""A run's or an artifact's config, rebuilt into the experiment that
colorizes, with every fault named with its file.

A run's config.json is not validated again (it was checked when the run
trained, on its devices); an artifact's model.json config goes through the
common checks, since anyone may have written it. Either may come from an
earlier version, without fields added since: both are given them here, and
only here, at their `base_config` values (`read_back`).
"""

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jaxcolor import systems
from jaxcolor.core import config_fields
from jaxcolor.core import configuration
from jaxcolor.core.errors import ArtifactError, ConfigError, error_line
from jaxcolor.safety.safetensors_header import shape_text
from jaxcolor.training import experiment


def read_back(config: ml_collections.ConfigDict, where: Any) -> None:
  """Gives `config`, read from `where` (a config.json or model.json), the
  fields `base_config` and its system's sections gained since it was
  written (`config_fields.fill_newer_fields`), in place.

  Raises:
    ConfigError: an unknown `config.system`. AttributeError: none.
  """
  system = systems.get_class(config.system)
  filled = config_fields.fill_newer_fields(config, system.newer_fields)
  if filled:
    logging.info("%s was written before %s existed: read with their "
                 "defaults.", where, ", ".join(filled))


def build_run(config: ml_collections.ConfigDict,
               config_path: Any) -> experiment.Experiment:
  """The experiment of a run's config.json, its faults named with the file.

  The config is not validated again: it was checked when the run trained,
  on its devices, whose count the batch sizes were checked for. Fields
  added since it was written are filled in first (`read_back`).

  Raises:
    ConfigError: '<config_path>: missing 'generator'' for a field the system
      reads and the file lacks; the system's own ConfigError (a value it
      cannot take), prefixed with the file.
  """
  try:
    read_back(config, config_path)
    return experiment.build(config, data="none", validate=False,
                            devices=jax.local_devices()[:1])
  except config_fields.MissingField as e:
    raise ConfigError(f"{config_path}: missing {e.path!r}.") from None
  except ConfigError as e:
    raise ConfigError(f"{config_path}: {e}") from None
  except (KeyError, AttributeError) as e:
    field = config_fields.missing_field(e, config)
    if field is None:  # Not a lookup in this config: a fault of the code.
      raise
    raise ConfigError(f"{config_path}: missing {field!r}.") from None


def check_artifact_config(config: ml_collections.ConfigDict,
                           meta_path: pathlib.Path) -> None:
  """An artifact's config through the checks a run's passes before it
  trains, so that an unknown key or a bad value fails here, named, rather
  than somewhere in the build or at the first photo.

  The common fields only (`configuration.validate`), after those added
  since the artifact was written are filled in (`read_back`), for one
  device and one process: the batch sizes were checked for the devices the
  run trained on, and only its network is built here. The datasets are not opened (an
  artifact holds no data, and export cut their paths to names), and the
  system's own `validate` does not run: the staged systems' reads the
  pretrained backbone's file, whose weights the artifact already holds.

  Raises:
    ArtifactError: '<meta_path>: its config does not validate: ...'
      naming the key. An unknown system is a ConfigError, as in the build.
  """
  fields = systems.get_class(config.system).config_fields
  try:
    read_back(config, meta_path)
    configuration.validate(config, device_count=1, process_count=1,
                           extra_fields=fields)
  except KeyError as e:  # ml_collections: "'key'\nDid you mean ...".
    key = str(e.args[0]).splitlines()[0] if e.args else ""
    raise ArtifactError(f"{meta_path}: its config does not "
                                 f"validate: it lacks {key}.") from None
  except Exception as e:  # ConfigError names the key; any JSON value may come.
    raise ArtifactError(f"{meta_path}: its config does not "
                                 f"validate: {error_line(e)}"
                                 ) from None




def artifact_arrays(arrays: dict[str, np.ndarray], abstract: dict[str, Any],
                    needed: set[str], weights: pathlib.Path,
                    output: str) -> dict[str, np.ndarray]:
  """The arrays an artifact's `output` reads, checked against the network's
  `abstract` ones: all present, each of its shape and dtype (weights stored
  in bfloat16 are widened to the network's float32, exactly). Checked here,
  not at the first call: a wrong shape would otherwise surface as a shape
  error deep in the network, or not at all.

  Raises:
    ArtifactError: a missing array, or one of another shape or dtype.
  """
  missing = sorted(p for p in needed if p not in arrays)
  if missing:
    raise ArtifactError(f"{weights} lacks {len(missing)} array(s) its output "
                        f"{output!r} reads, first {missing[0]}.")
  checked = {}
  for path in sorted(needed):
    have, need = arrays[path], abstract[path]
    if tuple(have.shape) != tuple(need.shape):
      raise ArtifactError(f"{weights}: {path} has shape {shape_text(have.shape)}"
                          f", the network needs {shape_text(need.shape)}.")
    if have.dtype == jnp.bfloat16 and need.dtype == np.float32:
      have = have.astype(np.float32)
    elif np.dtype(have.dtype) != np.dtype(need.dtype):
      raise ArtifactError(f"{weights}: {path} has dtype {have.dtype}, the "
                          f"network needs {np.dtype(need.dtype)}.")
    checked[path] = have
  return checked
