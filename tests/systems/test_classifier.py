"""Classification pretraining ('classify'): labelled folders, the SGD recipe,
the step on 8 devices against 1, top-1 accuracy in evaluation, and a smoke
run of the training job.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (assert_same_steps, init_host_state, load_config,
                     run_steps, with_plain_sgd)
from PIL import Image

from jaxcolor import data
from jaxcolor import systems
from jaxcolor.core import configuration
from jaxcolor.core import parallel
from jaxcolor.data import sources
from jaxcolor.evaluation import evaluator as evaluator_lib
from jaxcolor.training import experiment
from jaxcolor.training import loop
from jaxcolor.training import optimizers

CLASSES = ("horizontal", "vertical", "checker")


def _pattern(kind: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
  """A colored image whose class shows in its lightness alone."""
  period = int(rng.integers(4, 9))
  rows, cols = np.mgrid[:size, :size] // period
  mask = {"horizontal": rows % 2, "vertical": cols % 2,
          "checker": (rows + cols) % 2}[kind].astype(bool)
  colors = rng.integers(0, 256, (2, 3))
  colors[1] = 255 - colors[0]                # Far apart in lightness too.
  return np.where(mask[..., None], colors[0], colors[1]).astype(np.uint8)


def labelled_folder(root, per_class=(6, 2), split_names=("train", "test"),
                    seed=0):
  """root/{train,test}/<class>/*.png with `per_class` images per split."""
  rng = np.random.default_rng(seed)
  for split, count in zip(split_names, per_class):
    for kind in CLASSES:
      folder = root / split / kind
      folder.mkdir(parents=True)
      for i in range(count):
        Image.fromarray(_pattern(kind, rng)).save(folder / f"{i}.png")
  return root


def test_folder_with_class_subfolders_has_labels(tmp_path):
  root = labelled_folder(tmp_path / "images")
  info = data.describe(f"folder:{root}")
  assert info == {"name": f"folder:{root}", "num_train": 18, "num_eval": 6,
                  "has_labels": True, "num_classes": 3}
  # Labels follow the sorted class names, as torchvision's ImageFolder.
  dataset = sources.open_dataset(f"folder:{root}")
  expected = {name: i for i, name in enumerate(sorted(CLASSES))}
  for split in (dataset.train, dataset.eval):
    for index in range(len(split)):
      record = split[index]
      assert record["label"] == expected[record["key"].split("/")[-2]]
  batch = next(data.create_train_iterator(
      f"folder:{root}", image_size=32, global_batch_size=6, seed=0,
      process_index=0, process_count=1))
  assert batch["label"].dtype == np.int32 and batch["label"].shape == (6,)
  eval_batch = next(data.create_eval_batches(
      f"folder:{root}", image_size=32, batch_size=8, num_images=None,
      process_index=0, process_count=1))
  assert eval_batch["label"][:6].tolist() == sorted(
      [expected[c] for c in CLASSES for _ in range(2)])


def test_folder_labels_need_class_folders_in_both_splits(tmp_path):
  root = labelled_folder(tmp_path / "loose")
  Image.fromarray(_pattern("checker", np.random.default_rng(1))).save(
      root / "train" / "stray.png")             # Not in a class folder.
  assert not data.describe(f"folder:{root}")["has_labels"]
  root = labelled_folder(tmp_path / "unknown_class")
  (root / "test" / "checker").rename(root / "test" / "zebra")
  assert not data.describe(f"folder:{root}")["has_labels"]
  # `val/` is found before `test/`; a flat folder keeps its hash split.
  root = labelled_folder(tmp_path / "val", split_names=("train", "val"))
  assert data.describe(f"folder:{root}")["num_classes"] == 3


def test_sgd_decays_kernels_only_and_follows_warmup_cosine():
  opt = load_config("configs/resnet18_classify.py", "cifar10").optimizer
  opt.warmup_steps = 10
  tx, schedule = optimizers.create(opt, 110)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10),
                              schedule(60), schedule(110)],
                             [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7)
  params = {"kernel": jnp.ones((3, 3, 2, 2)), "scale": jnp.ones((2,))}
  zero = jax.tree.map(jnp.zeros_like, params)
  opt_state = tx.init(params)
  for _ in range(2):  # Rates 0 then 0.01; momentum 0.9 sums the decay twice.
    updates, opt_state = tx.update(zero, opt_state, params)
  np.testing.assert_allclose(updates["kernel"], -0.01 * 1.9 * 5e-4, rtol=1e-5)
  np.testing.assert_array_equal(updates["scale"], 0.0)  # Kernels only.


def test_step_on_8_devices_equals_1_device():
  """The same gradients, batch statistics and metrics, per tensor
  (helpers.step_errors), with the recipe's SGD made plain (no momentum,
  decay or warm-up: its state is then the step's gradient).

  Measured worst error (2-core x86 CPU, XLA:CPU): 8.7e-6 (the gradient of a
  batch-norm scale in layer1); the tolerance is 5e-5. A real bug is 4-5
  orders of magnitude above it: each device's gradient of its own shard,
  not averaged, gives errors of 1.0 to 2.4 on every gradient tensor;
  per-device batch statistics with averaged gradients 0.24 to 1.0, and up
  to 1.9 on the running variances.
  """
  assert jax.device_count() == 8
  config = with_plain_sgd(load_config("configs/resnet18_classify.py"), 0.1)
  state0 = init_host_state(config)
  classes = config.classifier.num_classes
  assert_same_steps(
      run_steps(config, jax.devices(), 1, initial_state=state0,
                num_classes=classes),
      run_steps(config, jax.devices()[:1], 1, initial_state=state0,
                num_classes=classes),
      state0, rtol=5e-5)


def test_classify_evaluation_reports_top1_accuracy():
  config = load_config("configs/resnet18_classify.py")
  config.classifier.num_classes = 3
  system = systems.create(config)
  mesh = parallel.make_mesh(jax.devices()[:1])
  state = jax.jit(system.init)(jax.random.key(0))
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
  logits = np.asarray(system.logits(state, image))
  predicted = logits.argmax(-1)
  label = np.where(np.arange(8) < 5, predicted, (predicted + 1) % 3)
  mask = np.arange(8) < 7                      # The last image is padding.
  evaluator = evaluator_lib.Evaluator(
      system, mesh, jax.tree.map(lambda _: parallel.replicated(mesh), state))
  means, images = evaluator.evaluate(
      state, [{"image": image, "label": label.astype(np.int32),
               "mask": mask}], num_grid_images=4)
  assert means["num_images"] == 7
  np.testing.assert_allclose(means["top1_accuracy"], 5 / 7, rtol=1e-6)
  assert "ssim" not in means and not images  # No colorization metrics.


def test_classify_needs_labels(tmp_path):
  config = load_config("configs/resnet18_classify.py")
  config.dataset = "sample"
  with pytest.raises(configuration.ConfigError, match="has no labels"):
    experiment.build(config)
  config.dataset = f"folder:{labelled_folder(tmp_path / 'images')}"
  with pytest.raises(configuration.ConfigError,
                     match="num_classes=10 but .* has 3 classes"):
    experiment.build(config)


@pytest.mark.slow  # Minutes on 2 cores: `pytest -m slow tests`.
def test_classify_smoke_run(tmp_path, one_device):
  root = labelled_folder(tmp_path / "images", per_class=(8, 3))
  workdir = tmp_path / "run"
  config = load_config("configs/resnet18_classify.py", "smoke")
  config.dataset = f"folder:{root}"
  config.classifier.num_classes = 3
  loop.train_and_evaluate(config, str(workdir))
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("classifier_loss" in l and "train_top1_accuracy" in l for l in lines)
  final = json.loads((workdir / "eval" / "6.json").read_text())
  assert final["num_images"] == 9 and 0 <= final["top1_accuracy"] <= 1
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == ["3", "6"]
