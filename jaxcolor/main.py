"""Entry point: `python -m jaxcolor.main --config FILE[:preset] --workdir DIR`.

Flags, process facts, then the library does the work (jaxcolor.train;
with `--mode=evaluate`, jaxcolor.evaluate scores saved checkpoints).
Overrides: `--config.batch_size=32 --config.generator.ngf=32`. The same job
is `jaxcolor train` and `jaxcolor evaluate` (jaxcolor/cli.py, which also
starts it: --help, quiet libraries, the compilation cache).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (for TensorBoard) is quiet.

import jax  # noqa: E402
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxcolor import cli
from jaxcolor import configuration
from jaxcolor import distributed
from jaxcolor import host_memory

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with a preset: configs/pix2pix.py:smoke.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, logs, metrics.jsonl, images.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "evaluate"],
    "train: train (resuming from the newest checkpoint); evaluate: score the "
    "workdir's checkpoints (config.evaluation.checkpoints), never train.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host: start jax.distributed first (also "
    "JAXCOLOR_DISTRIBUTED=1; see jaxcolor/distributed.py and launch/).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"{cli.program()} takes only flags, not "
                         f"{' '.join(argv[1:])}.")
  distributed.initialize(_DISTRIBUTED.value)
  logging.info("JAX %s: process %d of %d, %d local / %d global devices (%s).",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[0].device_kind)
  if jax.default_backend() == "cpu" and host_memory.hint():
    logging.info("%s", host_memory.hint())
  # The jobs import TensorFlow (TensorBoard writers): after the flags parse,
  # so a flag error is reported at once.
  from jaxcolor import checkpointing, divergence, evaluate, train  # noqa: PLC0415
  try:
    if _MODE.value == "evaluate":
      evaluate.evaluate_checkpoints(_CONFIG.value, _WORKDIR.value)
    else:
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except checkpointing.DamagedCheckpointError as e:  # The files' fault.
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(2)
  except configuration.ConfigError as e:
    print(f"Configuration error: {e}", file=sys.stderr)
    sys.exit(2)
  except divergence.TrainingDiverged as e:
    print(f"Training diverged: {e}", file=sys.stderr)
    sys.exit(3)


def _parse_flags(argv):
  """absl's flag parsing, with config errors as one line and no traceback."""
  try:
    parsed = flags.FLAGS(argv)
    # The config file loads lazily, and a failed load surfaces on first use.
    getattr(_CONFIG.value, "system", None)
    return parsed
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError,
          OSError, SyntaxError) as e:
    if cli.missing_flags(e):  # Said in one line by jaxcolor.cli.
      raise
    message = configuration.flag_error_message(e, argv)
    if message is None:
      raise
    print(f"Configuration error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  cli.run("train", sys.modules[__name__])
