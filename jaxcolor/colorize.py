"""`python -m jaxcolor.colorize`: colorize photos, folders and videos with a
trained run or a model artifact (also `jaxcolor colorize`).

  python -m jaxcolor.colorize --workdir runs/default --output colorized/ \\
      old_photo.jpg scans/ [--checkpoint 2000] [--format jpeg] [--batch_size 8] \\
      [--network_output generator] [--render_size 512]
  python -m jaxcolor.colorize --model PATH_OR_URL --output colorized/ photos/
  python -m jaxcolor.colorize --output colorized/ photos/   # the shipped model

Each INPUT is an image file, a folder of images (searched recursively) or a
video file (frames batched, a*b* smoothed within shots, audio kept). Outputs
go to OUTPUT as `<stem>.png` (or `.jpg`), keeping the input's file name and,
for folders, its subfolders; a video as OUTPUT/<its file name>. The inputs
are never written over. The work is jaxcolor/inference/colorize_job.py's.

From Python (a notebook), this module gives the colorizer
(jaxcolor/inference/colorizer.py):

  from jaxcolor import colorize
  colorizer = colorize.Colorizer.from_workdir("runs/default")
  # or colorize.Colorizer.from_pretrained(colorize.SHIPPED_MODEL)
  rgb = colorizer.colorize(gray)        # [H, W] or [H, W, 3] -> uint8 [H, W, 3]
"""

import sys

from absl import flags

from jaxcolor.inference import colorize_job
from jaxcolor.inference import photo_paths
from jaxcolor.inference import shipped_model
from jaxcolor.inference.colorizer import Colorizer
from jaxcolor.runtime import job

__all__ = ["Colorizer", "SHIPPED_MODEL"]

# The model the package ships: `Colorizer.from_pretrained(SHIPPED_MODEL)`.
SHIPPED_MODEL = shipped_model.DIRECTORY


def main(argv) -> None:
  F = flags.FLAGS
  options = colorize_job.Options(
      output=F.output, workdir=F.workdir, model=F.model,
      checkpoint=F.checkpoint, network_output=F.network_output,
      render_size=F.render_size, batch_size=F.batch_size,
      file_format=F.format, jpeg_quality=F.jpeg_quality,
      overwrite=F.overwrite, temporal_smoothing=F.temporal_smoothing,
      cut_threshold=F.cut_threshold, upsample=F.upsample)
  sys.exit(colorize_job.run(argv[1:], options, job.program()))


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The training run's directory.")
  flags.DEFINE_string("model", None, "A model artifact instead of a run: a "
                      "directory, archive, file:// or https:// URL "
                      "(optionally URL#sha256=HEX).")
  flags.DEFINE_float("temporal_smoothing", 0.6, "Videos: weight of the "
                     "previous frames' a*b* within a shot (0: frame by "
                     "frame).", lower_bound=0.0, upper_bound=0.99)
  flags.DEFINE_float("cut_threshold", 12.0, "Videos: mean absolute change of "
                     "a 32x32 gray thumbnail (0..255) that starts a new shot.")
  flags.DEFINE_integer("render_size", None, "The shorter side the network "
                       "sees, aspect kept; default: the training size's "
                       "square.")
  flags.DEFINE_enum("upsample", "bilinear", ["bilinear", "guided"],
                    "How the network's a*b* reach the photo's size: "
                    "bilinear, or guided by the photo's own L* (edges "
                    "without colour bleeding; docs/usage.md).")
  flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default: newest.")
  flags.DEFINE_string("output", None, "Folder for the colorized images; not "
                      "an input folder nor inside one.")
  flags.DEFINE_bool("overwrite", False, "Replace output files that exist; "
                    "by default they are kept and their inputs skipped.")
  flags.DEFINE_enum("format", "png", list(photo_paths.FORMATS), "Output file format.")
  flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality (--format=jpeg).")
  flags.DEFINE_integer("batch_size", 8, "Images per network call.")
  flags.DEFINE_string("network_output", None,
                      "Which of the run's outputs colors the photos, e.g. "
                      "'generator' (raw weights) beside 'generator_ema'; "
                      "default: the system's final output.")


if __name__ == "__main__":
  job.run("colorize", sys.modules[__name__])
