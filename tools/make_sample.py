"""Rebuilds the embedded photo sample, jaxcolor/sample_data/{train,eval}/.

Deterministic (seeded) selection from the project's shared photo folder
(`../shared/data/photos256`, see its README.md for provenance): landscapes,
people and animals from BSDS500 and two ImageNet samples, leaving out photos
whose mean CIE Lab chroma is low (near-grayscale photos teach a colorizer
nothing in a few minutes of training). Each chosen photo is re-encoded with its
shorter side at 144 px (bicubic, JPEG quality 88), so a 128 px random crop
still has room to move.

  python tools/make_sample.py            # defaults reproduce the shipped sample
  python tools/make_sample.py --dry_run  # list the choice, write nothing

Needs Pillow, NumPy and scikit-image (the `test` extra).
"""

import argparse
import pathlib
import re
import shutil

import numpy as np
from PIL import Image
from skimage import color

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "photos256"
DEFAULT_OUT = REPO / "jaxcolor" / "sample_data"

SHORT_SIDE = 144
JPEG_QUALITY = 88
# Mean C*ab over the photo, measured at quarter size. The photos256 medians
# are 14-18; 12 leaves out the muted quarter (fog, sepia-like, night scenes).
MIN_MEAN_CHROMA = 12.0

# ImageNet-1k synsets below n02666196 ("abacus") are the 398 animal classes;
# of the rest, the scene, people and plant classes with natural colors.
IMAGENET_A_EXTRA = {
    "alp", "cliff", "coral_reef", "geyser", "lakeside", "promontory",
    "sandbar", "seashore", "valley", "volcano", "ballplayer", "groom",
    "scuba_diver", "rapeseed", "daisy", "strawberry", "orange", "lemon",
    "pineapple", "banana", "pomegranate", "Granny_Smith", "broccoli",
    "bell_pepper", "corn", "hay",
}
FIRST_ARTIFACT_SYNSET = "n02666196"
# ImageNet DET-200 synsets: animals, people (and what people wear outdoors),
# fruit and vegetables.
IMAGENET_B_CLASSES = {
    "antelope", "ant", "armadillo", "bear", "bee", "bird", "butterfly",
    "camel", "cattle", "centipede", "dog", "domestic_cat", "dragonfly",
    "elephant", "fox", "frog", "giant_panda", "goldfish", "hamster",
    "hippopotamus", "horse", "isopod", "jellyfish", "koala_bear", "ladybug",
    "lion", "lizard", "lobster", "monkey", "otter", "porcupine", "rabbit",
    "ray", "red_panda", "scorpion", "seal", "sheep", "skunk", "snail", "snake",
    "squirrel", "starfish", "swine", "tick", "tiger", "turtle", "whale",
    "zebra", "person", "maillot", "miniskirt", "swimming_trunks",
    "bathing_cap", "sunglasses", "hat_with_a_wide_brim", "ski", "volleyball",
    "apple", "artichoke", "banana", "bell_pepper", "cucumber", "fig",
    "head_cabbage", "lemon", "mushroom", "orange", "pineapple", "pomegranate",
    "strawberry",
}
# (train, eval) photos per group: 288 + 32 in all, BSDS500 about half.
QUOTAS = {"bsds": (154, 16), "imagenet_a": (67, 8), "imagenet_b": (67, 8)}


def _imagenet_a_keep(path: pathlib.Path) -> bool:
  synset, _, name = path.stem.partition("_")
  return synset < FIRST_ARTIFACT_SYNSET or name in IMAGENET_A_EXTRA


def _imagenet_b_keep(path: pathlib.Path) -> bool:
  name = re.sub(r"^n\d+_\d+_", "", path.stem)
  return name in IMAGENET_B_CLASSES


def candidates(source: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """The photos of each group whose subject suits the sample, sorted."""
  listing = lambda folder: sorted((source / folder).glob("*.jp*g"),
                                  key=lambda p: p.name)
  return {
      "bsds": listing("bsds_train") + listing("bsds_test"),
      "imagenet_a": [p for p in listing("imagenet_a") if _imagenet_a_keep(p)],
      "imagenet_b": [p for p in listing("imagenet_b") if _imagenet_b_keep(p)],
  }


def mean_chroma(path: pathlib.Path) -> float:
  """Mean CIE Lab chroma sqrt(a^2 + b^2) of the photo at quarter size."""
  with Image.open(path) as im:
    im = im.convert("RGB")
    im = im.resize((max(1, im.width // 4), max(1, im.height // 4)),
                   Image.Resampling.BICUBIC)
  lab = color.rgb2lab(np.asarray(im, dtype=np.float64) / 255.0)
  return float(np.hypot(lab[..., 1], lab[..., 2]).mean())


def output_name(path: pathlib.Path) -> str:
  """`bsds_train/12003.jpg` -> `bsds_train_12003.jpg` (source kept in the name)."""
  return f"{path.parent.name}_{path.stem}.jpg"


def choose(source: pathlib.Path, seed: int, min_chroma: float
           ) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
  """(train, eval) source paths: per group, a seeded draw among colorful ones."""
  rng = np.random.default_rng(seed)
  train, evaluation = [], []
  for group, paths in candidates(source).items():
    colorful = [p for p in paths if mean_chroma(p) >= min_chroma]
    num_train, num_eval = QUOTAS[group]
    quota = num_train + num_eval
    if len(colorful) < quota:
      raise SystemExit(f"{group}: only {len(colorful)} photos with mean chroma"
                       f" >= {min_chroma}, quota {quota}.")
    picked = [colorful[i] for i in rng.choice(len(colorful), quota,
                                               replace=False)]
    evaluation += picked[:num_eval]
    train += picked[num_eval:]
    print(f"{group}: {len(paths)} candidates, {len(colorful)} colorful, "
          f"{num_train} train + {num_eval} eval")
  return sorted(train, key=output_name), sorted(evaluation, key=output_name)


def reencode(src: pathlib.Path, dst: pathlib.Path) -> None:
  with Image.open(src) as im:
    im = im.convert("RGB")
    scale = SHORT_SIDE / min(im.size)
    size = tuple(max(SHORT_SIDE, round(s * scale)) for s in im.size)
    im = im.resize(size, Image.Resampling.BICUBIC)
  im.save(dst, format="JPEG", quality=JPEG_QUALITY, optimize=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", type=pathlib.Path, default=DEFAULT_SOURCE)
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--min_chroma", type=float, default=MIN_MEAN_CHROMA)
  parser.add_argument("--dry_run", action="store_true")
  args = parser.parse_args()

  train, evaluation = choose(args.source, args.seed, args.min_chroma)
  if args.dry_run:
    for split, paths in (("train", train), ("eval", evaluation)):
      print(split, " ".join(output_name(p) for p in paths))
    return
  total = 0
  for split, paths in (("train", train), ("eval", evaluation)):
    folder = args.out / split
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in paths:
      reencode(path, folder / output_name(path))
      total += (folder / output_name(path)).stat().st_size
  print(f"wrote {len(train)} train + {len(evaluation)} eval photos, "
        f"{total / 2**20:.1f} MiB, to {args.out}")


if __name__ == "__main__":
  main()
