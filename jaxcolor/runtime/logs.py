"""A job's output is its own: the libraries' INFO and DEBUG records hidden.

Orbax's per-checkpoint lines, JAX's search for backends and TensorFlow's C++
INFO would bury the lines a user reads. `--verbosity` (or `-v`), given at
all, turns the filter off (jaxcolor/runtime/job.py).
"""

import logging as python_logging
import os
from typing import Callable

from absl import logging

# This package's files: their records are the job's own.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def library_filter(keep_own_info: bool
                   ) -> Callable[[python_logging.LogRecord], bool]:
  """A log filter that passes records from WARNING up, and with
  `keep_own_info` this package's records of any level.

  A record's `pathname` is the file that logged it (absl's logger finds the
  caller), so Orbax's lines are told from ours although both log through
  absl. The levels are Python's: absl's own `logging.WARNING` is -1, on its
  verbosity scale, and would pass everything.
  """
  def keep(record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or (
        keep_own_info and record.pathname.startswith(_PACKAGE_DIR))
  return keep


def quiet_libraries(keep_own_info: bool) -> None:
  """Hides the libraries' records below WARNING (`library_filter`) from
  absl's handler, which writes every Python logger's records, JAX's and
  Orbax's included; and TensorFlow's C++ INFO lines."""
  logging.get_absl_handler().addFilter(library_filter(keep_own_info))
  # Read when TensorFlow loads (a SavedModel export, a TFDS dataset).
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
