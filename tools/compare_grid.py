"""One grid of the same photos colorized by several models, for docs/results.md.

  python tools/compare_grid.py --truth ../shared/data/photos256/bsds_test \\
      --column "L1 only=runs/l1/bsds_test" --column "EMA=runs/x/bsds_test" \\
      --output docs/images/results_grid.jpg [--num_images 8] [--height 128]

Columns, left to right: gray input (the truth's L*, ab = 0), each --column
(NAME=FOLDER of colorized files with the truth's stems), truth. Rows: the
first --num_images landscape photos (width > height) by file name that every
folder has, each resized to --height (3:2), so the grid is the same photos
for every model. Column names are printed, in order, for the caption.
Needs scikit-image (in the `test` extra) for the gray column's Lab.
"""

import argparse
import pathlib
import sys

import numpy as np
from PIL import Image
from skimage import color as skcolor

from jaxcolor.evaluation import image_grid
from jaxcolor.data import sources


def _load(path: pathlib.Path, size: tuple[int, int]) -> np.ndarray:
  image = Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC)
  return np.asarray(image)


def _gray(rgb: np.ndarray) -> np.ndarray:
  lab = skcolor.rgb2lab(rgb / 255.0)
  lab[..., 1:] = 0.0
  return np.round(np.clip(skcolor.lab2rgb(lab), 0, 1) * 255).astype(np.uint8)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--truth", required=True)
  parser.add_argument("--column", action="append", default=[],
                      help="NAME=FOLDER of colorized photos; repeatable.")
  parser.add_argument("--output", required=True)
  parser.add_argument("--num_images", type=int, default=8)
  parser.add_argument("--height", type=int, default=128)
  args = parser.parse_args()
  truth_dir = pathlib.Path(args.truth)
  columns = []
  for spec in args.column:
    name, sep, folder = spec.partition("=")
    if not sep or not pathlib.Path(folder).is_dir():
      sys.exit(f"error: --column {spec!r}: expected NAME=FOLDER (an existing folder)")
    found = {pathlib.PurePosixPath(p).stem: pathlib.Path(folder) / p
             for p in sources.list_images(pathlib.Path(folder))}
    columns.append((name, found))
  size = (args.height * 3 // 2, args.height)
  rows = []
  for relative in sources.list_images(truth_dir):
    stem = pathlib.PurePosixPath(relative).stem
    with Image.open(truth_dir / relative) as im:
      landscape = im.width > im.height
    if landscape and all(stem in found for _, found in columns):
      rows.append((truth_dir / relative, [found[stem] for _, found in columns]))
    if len(rows) == args.num_images:
      break
  if not rows:
    sys.exit("error: no landscape photo is in every folder")
  truth = np.stack([_load(t, size) for t, _ in rows])
  grid_columns = [np.stack([_gray(t) for t in truth])]
  grid_columns += [np.stack([_load(p[j], size) for _, p in rows])
                   for j in range(len(columns))]
  grid_columns.append(truth)
  grid = image_grid.make_grid(grid_columns)
  if pathlib.Path(args.output).suffix.lower() in (".jpg", ".jpeg"):
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.output, quality=88)  # docs: small files.
  else:
    image_grid.save_png(args.output, grid)
  print("columns: gray | " + " | ".join(n for n, _ in columns) + " | truth")
  print("rows: " + ", ".join(t.stem for t, _ in rows))


if __name__ == "__main__":
  main()
