"""A crop at 100 % where two colorizations of the same photos differ most,
beside the truth: how guided upsampling changes an edge (docs/results.md).

  python tools/edge_crop.py --truth ../shared/data/photos256/bsds_test \\
      --column "bilinear=runs/x/bsds_test" --column "guided=runs/x/bsds_test_guided" \\
      --output docs/images/guided_crop.png [--size 96] [--zoom 3]

The photo and the window are chosen by the data, not by eye: the
--size x --size window (on a grid of half its size) whose mean absolute
RGB difference between the first two columns is largest, over every photo
the folders share. Columns, left to right: gray input, each --column,
truth; no resampling (--zoom repeats each pixel, nearest neighbour, to
show them). Prints the photo and the window.
"""

import argparse
import pathlib

import numpy as np
from PIL import Image

from jaxcolor.core import color_space
from jaxcolor.data import sources


def _rgb(path: pathlib.Path) -> np.ndarray:
  return np.asarray(Image.open(path).convert("RGB"), np.float32)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--truth", required=True, type=pathlib.Path)
  parser.add_argument("--column", action="append", required=True)
  parser.add_argument("--output", required=True, type=pathlib.Path)
  parser.add_argument("--size", type=int, default=96)
  parser.add_argument("--zoom", type=int, default=1)
  args = parser.parse_args()
  columns = [(name, pathlib.Path(folder)) for name, _, folder in
             (c.partition("=") for c in args.column)]
  best = (-1.0, None, 0, 0)
  for relative in sources.list_images(args.truth):
    stem = pathlib.Path(relative).stem
    found = [next(iter(sorted(f.glob(stem + ".*"))), None) for _, f in columns]
    if None in found:
      continue
    a, b = _rgb(found[0]), _rgb(found[1])
    difference = np.abs(a - b).mean(-1)
    size, step = args.size, args.size // 2
    for y in range(0, difference.shape[0] - size + 1, step):
      for x in range(0, difference.shape[1] - size + 1, step):
        value = float(difference[y:y + size, x:x + size].mean())
        if value > best[0]:
          best = (value, relative, y, x)
  value, relative, y, x = best
  if relative is None:
    raise SystemExit("error: no photo is in every folder.")
  stem = pathlib.Path(relative).stem
  truth = np.asarray(Image.open(args.truth / relative).convert("RGB"))
  gray = np.asarray(color_space.with_ab(truth, np.zeros(truth.shape[:2] + (2,),
                                                      np.float32)))
  tiles = [gray] + [np.asarray(Image.open(next(iter(sorted(f.glob(stem + ".*")))))
                               .convert("RGB")) for _, f in columns] + [truth]
  size = args.size
  zoom = args.zoom
  crops = [t[y:y + size, x:x + size].repeat(zoom, 0).repeat(zoom, 1)
           for t in tiles]
  gap = np.full((size * zoom, 4, 3), 255, np.uint8)
  row = np.concatenate([c for crop in crops for c in (crop, gap)][:-1], axis=1)
  args.output.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(row).save(args.output)
  print(f"{relative}: window y={y} x={x} size {size}, mean |difference| "
        f"{value:.1f}; columns: gray, {', '.join(n for n, _ in columns)}, truth")


if __name__ == "__main__":
  main()
