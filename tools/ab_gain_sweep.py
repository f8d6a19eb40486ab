"""Would more color at inference help? Scores a run's a*b* times a gain.

  python tools/ab_gain_sweep.py --workdir runs/cpu_budget --checkpoint 1500 \\
      [--photos FOLDER] [--gains 1,1.25,1.5,1.75,2,2.5]

Each color photo is colorized once through the colorize path (full
resolution, `jaxcolor.colorize.Colorizer`); its a*b* are multiplied by each
gain before being joined to the photo's L*, and scored with
`jaxcolor.score`'s per-image metrics. Prints, per gain, PSNR minus the gray
baseline and the colorfulness share (docs/metrics.md). Without --photos the
photos are the run's own held-out split of its `folder:` dataset (the split
the training never read), the place to tune such a knob; never tune on a
test set. Grayscale photos are left out, as training leaves them out.
docs/results.md has the measurement that dropped the idea.
"""

import argparse
import pathlib

import jax
import numpy as np

from jaxcolor import colorize
from jaxcolor.evaluation import scoring as score
from jaxcolor.inference import photo_paths as photo_files
from jaxcolor.inference import rendering as photo_io
from jaxcolor.training import rundir
from jaxcolor.data import sources
from jaxcolor.data import transforms


def _photos(workdir: str, folder: str | None) -> list[pathlib.Path]:
  if folder is not None:
    return [file for file, _ in photo_files.find_inputs([folder])]
  dataset = rundir.RunDir(workdir).read_config().dataset
  if not dataset.startswith("folder:"):
    raise SystemExit(f"error: the run trained on {dataset!r}, not a folder; "
                     "give --photos.")
  root = pathlib.Path(dataset[len("folder:"):])
  return [root / f for f in sources.list_images(root) if sources.is_held_out(f)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--checkpoint", type=int, default=None)
  parser.add_argument("--output", default=None,
                      help="network output (default: the run's final one)")
  parser.add_argument("--photos", default=None)
  parser.add_argument("--gains", default="1,1.25,1.5,1.75,2,2.5")
  args = parser.parse_args()
  gains = [float(g) for g in args.gains.split(",")]
  colorizer = colorize.Colorizer.from_workdir(
      args.workdir, args.checkpoint, output=args.output, batch_size=16)
  images, truths = [], []
  for file in _photos(args.workdir, args.photos):
    image = photo_files.load_image(file)
    rgb = np.asarray(image.convert("RGB"))
    if not transforms.is_grayscale(rgb):
      images.append(image)
      truths.append(rgb)
  if not images:
    raise SystemExit("error: no color photos to score.")
  abs_ = colorizer.predict_ab(images)
  print(f"{len(images)} color photos; step {colorizer.step}, output "
        f"{colorizer.output!r}")
  for gain in gains:
    rows = []
    for image, truth, ab in zip(images, truths, abs_):
      values = jax.device_get(score.score_pair(
          photo_io.recombine(image, ab * gain), truth))
      rows.append([values["prediction"]["psnr"], values["gray"]["psnr"],
                   values["prediction"]["colorfulness"],
                   values["truth"]["colorfulness"]])
    psnr, gray, color, true_color = np.mean(np.array(rows, float), axis=0)
    print(f"gain {gain:4.2f}: PSNR {psnr:.3f} dB ({psnr - gray:+.3f} against "
          f"gray), colorfulness {100 * color / true_color:.1f} % of the "
          f"truth's")


if __name__ == "__main__":
  main()
