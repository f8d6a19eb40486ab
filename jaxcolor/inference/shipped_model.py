"""The model jaxcolor ships, which `colorize` and `serve` use when given
neither --workdir nor --model.

jaxcolor/pretrained/cpu_2h/ is the artifact (jaxcolor/inference/artifact.py)
of configs/cpu_2h.py trained under the quality protocol of docs/results.md,
its weights stored in bfloat16; jaxcolor/pretrained/MODEL_CARD.md beside it
says what it was trained on, how, its scores on both test splits and where
it fails. It is read like any artifact (every file's sha256 checked), from
the installed package: nothing is downloaded.
"""

import pathlib

from jaxcolor.core.errors import ArtifactError

NAME = "cpu_2h"
FOLDER = pathlib.Path(__file__).resolve().parents[1] / "pretrained"
DIRECTORY = FOLDER / NAME
CARD = FOLDER / "MODEL_CARD.md"


def directory() -> pathlib.Path:
  """The shipped artifact's directory.

  Raises:
    ArtifactError: it is not installed (a copy of the package without its
      data files); the message says what to pass instead.
  """
  if not (DIRECTORY / "model.json").is_file():
    raise ArtifactError(
        f"no --workdir or --model was given, and the shipped model "
        f"{DIRECTORY} is not installed: pass --model PATH_OR_URL (an "
        "artifact) or --workdir RUN (a training run).")
  return DIRECTORY


def notice() -> str:
  """One line for the user: which model colors their photos, and its card."""
  return (f"No --workdir or --model: using the shipped model {NAME} "
          f"({DIRECTORY}; what it is and where it fails: {CARD}).")
