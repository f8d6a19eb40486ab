"""Where images come from: the embedded sample, a folder, or a TFDS dataset.

`open_dataset(name, data_dir)` parses a dataset string and returns its train
and evaluation splits as grain random-access sources. Every source yields
records `{'encoded': bytes | None, 'key': str}` (plus `'label'`: the class
index, when the dataset has one); decoding is left to `transforms`, so that
broken files are skipped and counted in one place whatever their origin.

Dataset strings:
  'sample'          the photos shipped in jaxcolor/sample_data/{train,eval}.
  'folder:/path'    every image under /path (recursive). Evaluation uses
                    /path/{eval,val,validation,test}/ when /path/train/ has
                    such a sibling; otherwise a fixed ~5% hold-out picked by a
                    hash of each file's relative path (so adding files never
                    moves an old one between splits). Labels: when every image
                    of train/ and of the evaluation folder sits in a
                    first-level class folder (train/<class>/x.jpg) and the
                    evaluation classes are among train/'s, the class is the
                    label, numbered in sorted order of train/'s class names
                    (torchvision's ImageFolder rule).
  'places365_small', 'imagenet2012', 'coco/2017', 'cifar10', or 'tfds:NAME'
                    a TFDS dataset prepared as ArrayRecord in data_dir, read
                    with `tfds.data_source` (random access, no TensorFlow).
"""

import dataclasses
import hashlib
import importlib.resources
import os
import pathlib
from typing import Any

from jaxcolor.core.errors import ConfigError, suggest

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# 'test' last: CIFAR-10 exports come as train/ + test/ only.
EVAL_FOLDER_NAMES = ("eval", "val", "validation", "test")
# Share of a flat folder held out for evaluation, in thousandths.
HOLDOUT_PER_MILLE = 50

# TFDS datasets known by their bare name: (train split, evaluation split).
# cifar10 has no validation split; its test split is the usual evaluation set.
TFDS_SPLITS = {
    "places365_small": ("train", "validation"),
    "imagenet2012": ("train", "validation"),
    "coco/2017": ("train", "validation"),
    "cifar10": ("train", "test"),
}

USAGE = ("expected 'sample', 'folder:/path/to/images', one of "
         f"{', '.join(repr(n) for n in TFDS_SPLITS)}, or 'tfds:NAME' for "
         "another TFDS image dataset")


class DatasetNotFoundError(ConfigError, FileNotFoundError):
  """A dataset string that names nothing: an unknown name, no such folder.

  A `ConfigError` (printed by `jaxcolor.main` as one line), and still the
  ValueError / FileNotFoundError it was before.
  """


class DatasetNotPreparedError(ConfigError, FileNotFoundError):
  """A TFDS dataset is missing from data_dir (or is not in ArrayRecord form)."""


class NoUsableImagesError(ConfigError):
  """A split without one usable image: none listed, or every one skipped.

  A `ConfigError` (config.dataset names data that cannot train), so
  `jaxcolor.main` prints it as one line.
  """


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset's two splits and what its records hold."""
  name: str
  train: Any  # grain random-access source: __len__ and __getitem__.
  eval: Any
  has_labels: bool = False
  num_classes: int | None = None


class FileSource:
  """Random access to a fixed list of image files under a root folder.

  With `labels` (one class index per file), records carry 'label'.
  """

  def __init__(self, root: str | os.PathLike, relative_paths: list[str],
               labels: list[int] | None = None):
    self._root = pathlib.Path(root)
    self._relative_paths = list(relative_paths)
    self._labels = None if labels is None else list(labels)

  @property
  def root(self) -> pathlib.Path:
    return self._root

  def __len__(self) -> int:
    return len(self._relative_paths)

  def __getitem__(self, index: int) -> dict[str, Any]:
    relative_path = self._relative_paths[index]
    path = self._root / relative_path
    try:
      encoded = path.read_bytes()
    except OSError:  # Vanished, unreadable, or a broken symlink.
      encoded = None
    record = {"encoded": encoded, "key": str(path)}
    if self._labels is not None:
      record["label"] = self._labels[index]
    return record

  def __repr__(self) -> str:
    return f"FileSource({str(self._root)!r}, {len(self)} files)"


class TfdsSource:
  """A TFDS ArrayRecord split with the image left encoded (bytes)."""

  def __init__(self, data_source: Any, name: str, split: str, has_labels: bool):
    self._data_source = data_source
    self._name = name
    self._split = split
    self._has_labels = has_labels

  def __len__(self) -> int:
    return len(self._data_source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = self._data_source[index]
    record = {"encoded": example["image"],
              "key": f"{self._name}[{self._split}][{index}]"}
    if self._has_labels:
      record["label"] = int(example["label"])
    return record

  def __repr__(self) -> str:
    return f"TfdsSource({self._name!r}, split={self._split!r}, {len(self)})"


def is_image_file(name: str) -> bool:
  return (not name.startswith(".")
          and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def list_images(root: pathlib.Path) -> list[str]:
  """Relative POSIX paths of the image files under root, sorted."""
  found = []
  for folder, subfolders, files in os.walk(root):
    subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
    relative_folder = pathlib.Path(folder).relative_to(root)
    found += [(relative_folder / f).as_posix() for f in files
              if is_image_file(f)]
  return sorted(found)


def is_held_out(relative_path: str) -> bool:
  digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % 1000 < HOLDOUT_PER_MILLE


def _no_images_error(root: pathlib.Path) -> NoUsableImagesError:
  return NoUsableImagesError(
      f"No image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}.")


def class_folders(train_files: list[str],
                  eval_files: list[str]) -> list[str] | None:
  """Sorted class names when both splits are laid out as <class>/<file>.

  None when any image sits elsewhere (directly in the split folder, or
  deeper) or the evaluation split has a class that train/ lacks.
  """
  def classes(files):
    parts = [f.split("/") for f in files]
    if any(len(p) != 2 for p in parts):
      return None
    return {p[0] for p in parts}
  train_classes, eval_classes = classes(train_files), classes(eval_files)
  if train_classes is None or eval_classes is None:
    return None
  if not eval_classes <= train_classes:
    return None
  return sorted(train_classes)


def open_folder(root: str | os.PathLike, name: str | None = None) -> Dataset:
  """A folder of images: train/ + eval/ (val/, validation/, test/), with
  class-folder labels when both have them, or a hash split."""
  root = pathlib.Path(root).expanduser()
  if not root.is_dir():
    raise DatasetNotFoundError(f"Image folder {root} does not exist or is "
                               "not a directory.")
  name = name or f"folder:{root}"
  eval_folders = [root / n for n in EVAL_FOLDER_NAMES if (root / n).is_dir()]
  if (root / "train").is_dir() and eval_folders:
    train_files = list_images(root / "train")
    eval_files = list_images(eval_folders[0])
    if not train_files:
      raise _no_images_error(root / "train")
    if not eval_files:
      raise _no_images_error(eval_folders[0])
    classes = class_folders(train_files, eval_files)
    if classes is None:
      return Dataset(name, FileSource(root / "train", train_files),
                     FileSource(eval_folders[0], eval_files))
    index = {c: i for i, c in enumerate(classes)}
    label = lambda files: [index[f.split("/")[0]] for f in files]
    return Dataset(
        name, FileSource(root / "train", train_files, label(train_files)),
        FileSource(eval_folders[0], eval_files, label(eval_files)),
        has_labels=True, num_classes=len(classes))
  files = list_images(root)
  if not files:
    raise _no_images_error(root)
  eval_files = [f for f in files if is_held_out(f)]
  if not eval_files:  # Small folders: the file with the smallest hash.
    eval_files = [min(files, key=lambda f: hashlib.sha256(
        f.encode("utf-8")).digest())]
  held_out = set(eval_files)
  train_files = [f for f in files if f not in held_out]
  return Dataset(name, FileSource(root, train_files),
                 FileSource(root, eval_files))


def eval_dataset_of(config: Any) -> str:
  """The dataset string a config evaluates on: `eval_dataset`, else `dataset`."""
  return config.eval_dataset or config.dataset


def sample_dir() -> pathlib.Path:
  """The embedded sample's folder (inside the installed package)."""
  path = pathlib.Path(str(importlib.resources.files("jaxcolor") / "sample_data"))
  if not (path / "train").is_dir():
    raise FileNotFoundError(
        f"The embedded sample is missing from {path}; reinstall jaxcolor.")
  return path


def _tfds_root(builder: Any, name: str) -> str:
  # builder.data_dir is ROOT/NAME/VERSION and NAME may hold a config ('/').
  return str(pathlib.Path(builder.data_dir).parents[len(name.split("/"))])


def _has_random_access(builder: Any) -> bool:
  return builder.info.file_format.value in ("array_record", "parquet")


def _not_prepared_error(name: str, data_dir: str | None, builder: Any
                        ) -> DatasetNotPreparedError:
  root = _tfds_root(builder, name)
  build = f"tfds build {name} --data_dir {root} --file_format array_record"
  if builder.is_prepared() and not _has_random_access(builder):
    return DatasetNotPreparedError(
        f"TFDS dataset {name!r} in {root} is prepared as "
        f"{builder.info.file_format.value}, which has no random access; "
        f"rebuild it as ArrayRecord: `{build}`.")
  manual = ""
  if name.startswith("imagenet2012"):
    manual = (f" after placing ILSVRC2012_img_train.tar and "
              f"ILSVRC2012_img_val.tar in {root}/downloads/manual "
              "(or pass --manual_dir DIR)")
  where = data_dir if data_dir is not None else f"{root} (the TFDS default)"
  return DatasetNotPreparedError(
      f"TFDS dataset {name!r} is not prepared in data_dir={where}; prepare "
      f"it with `{build}`{manual}.")


def open_tfds(name: str, data_dir: str | None = None) -> Dataset:
  """A TFDS image dataset; raises DatasetNotPreparedError if not built."""
  import tensorflow_datasets as tfds  # Heavy; only TFDS runs need it.

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    hint = suggest(
        name.split(":")[0], tfds.list_builders(with_community_datasets=False))
    raise DatasetNotFoundError(f"Unknown dataset {name!r}{hint}: TFDS has no "
                               f"such dataset; {USAGE}.") from None
  features = builder.info.features
  if "image" not in features:
    raise ValueError(f"TFDS dataset {name!r} has no 'image' feature.")
  has_labels = ("label" in features
                and hasattr(features["label"], "num_classes"))
  if name in TFDS_SPLITS:
    train_split, eval_split = TFDS_SPLITS[name]
  else:
    splits = set(builder.info.splits.keys())
    eval_split = next((s for s in ("validation", "test") if s in splits), None)
    if "train" not in splits or eval_split is None:
      raise _not_prepared_error(name, data_dir, builder)
    train_split = "train"
  # The image stays encoded: `transforms.decode` does it, robustly. A plain
  # dict, not a PartialDecoding: `tfds.data_source` decodes with NumPy, where
  # a PartialDecoding fails at the first record ("FeaturesDict received a
  # non dict item"), and it compares features by their TensorFlow dtypes,
  # which needs TensorFlow. The other features (ids, file names) are cheap.
  decoders = {"image": tfds.decode.SkipDecoding()}
  splits = {}
  for split in (train_split, eval_split):
    try:
      data_source = tfds.data_source(name, split=split, data_dir=data_dir,
                                     download=False, decoders=decoders)
    except Exception as e:  # TFDS reports a missing dataset in several ways.
      if builder.is_prepared() and _has_random_access(builder):
        raise
      raise _not_prepared_error(name, data_dir, builder) from e
    splits[split] = TfdsSource(data_source, name, split, has_labels)
  return Dataset(name, splits[train_split], splits[eval_split],
                 has_labels=has_labels,
                 num_classes=(features["label"].num_classes if has_labels
                              else None))


def open_dataset(dataset: str, data_dir: str | None = None) -> Dataset:
  """Parses a dataset string (see the module docstring). data_dir: TFDS only."""
  if dataset == "sample":
    root = sample_dir()
    return Dataset("sample",
                   FileSource(root / "train", list_images(root / "train")),
                   FileSource(root / "eval", list_images(root / "eval")))
  if dataset.startswith("folder:"):
    path = dataset[len("folder:"):]
    if not path:
      raise DatasetNotFoundError(
          f"Dataset {dataset!r} names no folder; {USAGE}.")
    return open_folder(path, name=dataset)
  if dataset in TFDS_SPLITS:
    return open_tfds(dataset, data_dir)
  if dataset.startswith("tfds:") and len(dataset) > len("tfds:"):
    return open_tfds(dataset[len("tfds:"):], data_dir)
  hint = suggest(dataset, ["sample", *TFDS_SPLITS])
  raise DatasetNotFoundError(f"Unknown dataset {dataset!r}{hint}: {USAGE}.")


def describe(dataset: str, data_dir: str | None = None) -> dict[str, Any]:
  """Name, split sizes (files or records, before any is skipped), labels."""
  data = open_dataset(dataset, data_dir)
  return {"name": data.name, "num_train": len(data.train),
          "num_eval": len(data.eval), "has_labels": data.has_labels,
          "num_classes": data.num_classes}


def check_datasets(config, *, train: bool = True) -> dict[str, dict[str, Any]]:
  """Opens a run's datasets as the run will, reading no image.

  Training and evaluation runs call it once (`experiment.build`), before
  they write to the workdir or compile anything.

  Args:
    config: the full configuration.
    train: check `dataset` and `eval_dataset`; False: only the one that
      an evaluation run reads (`eval_dataset`, else `dataset`).

  Returns:
    {config key: `describe(...)`} of each dataset checked ('dataset',
    'eval_dataset'), for the system to check its needs against (labels,
    class count).

  Raises:
    ConfigError: naming the key, for an unknown name (with the closest
      known one), a missing or empty folder, or a TFDS dataset that is not
      prepared in data_dir (with the `tfds build` command that prepares it).
  """
  if train:
    keys = ("dataset", "eval_dataset")
  else:
    keys = ("eval_dataset",) if config.eval_dataset else ("dataset",)
  described: dict[str, dict[str, Any]] = {}
  for key in keys:
    name = config[key]
    if not name:
      continue
    same = next((v for k, v in described.items() if config[k] == name), None)
    if same is not None:
      described[key] = same
      continue
    try:
      described[key] = describe(name, config.data_dir or None)
    except (OSError, ValueError) as e:  # Whatever raised it, the key is at fault.
      raise ConfigError(f"config.{key}={name!r}: {e}") from None
  return described
