"""A light install: TensorFlow (1.3 GB) is the `saved_model` extra, and
nothing but the SavedModel export imports it (docs/install.md).

Training, evaluation, TensorBoard logging, TFDS, serving and the StableHLO
export run without it; an export asked for a SavedModel where it is missing
fails at once, in one line that says what to install.
"""

import pathlib
import subprocess
import sys
import tomllib

import pytest

from jaxcolor.inference import exporting as export_lib
from jaxcolor.inference import rgb_program

REPO = pathlib.Path(__file__).resolve().parents[1]
NEEDS_TENSORFLOW = ("the SavedModel form needs TensorFlow: "
                    "pip install 'jaxcolor[saved_model]'")

# A program's first lines: TensorFlow as if not installed. The path finder
# stops finding it, so `find_spec` says None (etils and TFDS ask it) and an
# import fails; a None in sys.modules would not do, as TFDS takes any entry
# there for TensorFlow loaded.
_WITHOUT_TENSORFLOW = """
import importlib.machinery, sys

class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
      return None
    return super().find_spec(name, path, target)

sys.meta_path = [PathFinderWithoutTensorFlow
                 if f is importlib.machinery.PathFinder else f
                 for f in sys.meta_path]
"""

# Imports every module given (benchmark in a second process: it defines
# flags of the same names as main), runs a logger and a progress report, and
# prints the TensorFlow modules imported. TensorFlow is installed where the
# suite runs (the test extra): an import of it would succeed, unseen.
_IMPORT_ALL = """
import importlib, sys, tempfile
import numpy as np
modules = sys.argv[1:]
for name in modules:
  importlib.import_module(name)
if "jaxcolor.training.run_log" in modules:
  from jaxcolor.training import rundir
  from jaxcolor.training import run_log
  logger = run_log.MetricLogger(rundir.RunDir(tempfile.mkdtemp()),
                                is_primary=True)
  logger.scalars(1, {"loss": 0.5})
  logger.images(1, {"grid": np.zeros((1, 4, 4, 3), np.uint8)})
  logger.hparams({"system": "pix2pix"})
  logger.close()
  progress = run_log.Progress(first_step=0, num_train_steps=2, every_steps=1)
  with progress.timed("eval"):
    progress(1)
print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))
"""


def _modules() -> list[str]:
  names = []
  for path in sorted((REPO / "jaxcolor").rglob("*.py")):
    parts = path.relative_to(REPO).with_suffix("").parts
    names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
  return names


def test_no_module_imports_tensorflow():
  modules = [m for m in _modules() if m != "jaxcolor.benchmark"]
  for group in (modules, ["jaxcolor.benchmark"]):
    result = subprocess.run([sys.executable, "-c", _IMPORT_ALL, *group],
                            cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "[]", result.stdout[-3000:]


_BUILD_TFDS = """
import sys
import numpy as np
import tensorflow_datasets as tfds

class TinyPhotos(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(num_classes=3),
        "file_name": tfds.features.Text()})
    return tfds.core.DatasetInfo(builder=self, features=features)

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(4),
            "validation": self._generate_examples(2)}

  def _generate_examples(self, n):
    rng = np.random.default_rng(n)
    for i in range(n):
      yield str(i), {"image": rng.integers(0, 256, (20, 24, 3), np.uint8),
                     "label": i % 3, "file_name": f"{i}.png"}

builder = TinyPhotos(data_dir=sys.argv[1], file_format="array_record")
builder.download_and_prepare()
"""

_READ_TFDS = _WITHOUT_TENSORFLOW + """
from jaxcolor.data import sources
dataset = sources.open_tfds("tiny_photos", data_dir=sys.argv[1])
record = dataset.eval[1]
print(len(dataset.train), len(dataset.eval), dataset.num_classes,
      record["encoded"][:4] == b"\\x89PNG", record["label"] in (0, 1))
"""


def test_tfds_array_record_is_read_without_tensorflow(tmp_path):
  """A dataset prepared as `tfds build --file_format array_record` does it
  (TFDS encodes the images with TensorFlow), read with TensorFlow hidden:
  the image stays PNG bytes. TFDS's mock data, which the other TFDS tests
  use, does not go through `tfds.data_source`'s NumPy decoding."""
  pytest.importorskip("tensorflow")
  for program in (_BUILD_TFDS, _READ_TFDS):
    result = subprocess.run([sys.executable, "-c", program, str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ["4", "2", "3", "True", "True"]


def test_saved_model_export_without_tensorflow_fails_first(tmp_path,
                                                           monkeypatch):
  # As if not installed, for `find_spec` (TensorFlow may be imported here).
  monkeypatch.setitem(sys.modules, "tensorflow", None)
  out = tmp_path / "model"
  with pytest.raises(rgb_program.MissingTensorFlowError) as error:
    # No such run: the check comes before the checkpoint is looked for.
    export_lib.export(tmp_path / "no_run", out, saved_model=True)
  assert str(error.value) == NEEDS_TENSORFLOW
  assert not out.exists()


def test_saved_model_command_without_tensorflow_says_what_to_install(
    tmp_path):
  program = _WITHOUT_TENSORFLOW + (
      "import runpy\n"
      "runpy.run_module('jaxcolor.export', run_name='__main__',\n"
      "                 alter_sys=True)\n")
  result = subprocess.run(
      [sys.executable, "-c", program, f"--workdir={tmp_path / 'no_run'}",
       f"--output={tmp_path / 'model'}", "--saved_model"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert NEEDS_TENSORFLOW in result.stderr, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert not (tmp_path / "model").exists()


def test_extras():
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  core = " ".join(project["dependencies"])
  assert "tensorflow-cpu" not in core and "tensorboard" in core
  extras = project["optional-dependencies"]
  assert any(r.startswith("tensorflow-cpu") for r in extras["saved_model"])
  assert "jaxcolor[saved_model]" in extras["test"]  # tests/test_export.py.
  jax_range = next(r for r in project["dependencies"]
                   if r.startswith("jax>")).removeprefix("jax")
  assert extras["cuda12"] == [f"jax[cuda12]{jax_range}"]
  assert extras["tpu"] == [f"jax[tpu]{jax_range}"]
  license_text = (REPO / project["license-files"][0]).read_text()
  assert project["license"] == "Apache-2.0"
  assert "Apache License\n                           Version 2.0" in (
      license_text)
