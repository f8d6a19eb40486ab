"""The colorize job (`jaxcolor colorize`): photos, folders and videos in, one
colorized file each out, and a summary a user reads.

The inputs are never written over, and the output folder is checked before
the model is read (`photo_paths.check_output`): it must be a folder (or not
exist yet), no output path may be an input file, and it may not be an input
folder nor lie inside one. Colorized files beside the photos would be taken
for photos by the next run over that folder, and their names could collide
with the originals', so that is refused outright rather than allowed where
no name collides. An output file that exists already (an earlier run's) is
kept and its input skipped, and the job says how many; `overwrite` replaces
them.

Throughput: host threads decode the next batch and recombine and encode the
last while the devices work (`photo_paths.colorize_files`); the job prints
images/s and each stage's host seconds at the end.
"""

import dataclasses
import os
import pathlib
import sys
import time
from typing import Sequence

from jaxcolor.core.errors import JobError
from jaxcolor.inference import film
from jaxcolor.inference import photo_paths
from jaxcolor.inference import shipped_model
from jaxcolor.inference.colorizer import Colorizer


class UsageError(JobError):
  """The command line cannot name a job: no inputs, or both a run and a
  model."""


@dataclasses.dataclass(frozen=True)
class Options:
  """The job's choices; the flags of jaxcolor/colorize.py."""
  output: str
  workdir: str | None = None
  model: str | None = None
  checkpoint: int | None = None
  network_output: str | None = None
  render_size: int | None = None
  batch_size: int = 8
  file_format: str = "png"
  jpeg_quality: int = 95
  overwrite: bool = False
  temporal_smoothing: float = 0.6
  cut_threshold: float = 12.0
  upsample: str = "bilinear"


def run(inputs: Sequence[str], options: Options, program: str) -> int:
  """Colorizes `inputs` into `options.output`; returns the exit status (1
  when a file failed). `program` is the command as typed, for messages.

  Raises:
    UsageError, ConfigError, ArtifactError, OutputError: one line naming
      the value or file; nothing has been written.
  """
  o = options
  if not inputs:
    raise UsageError(f"name the photos, folders or videos to colorize after "
                     f"the flags, e.g. `{program} --workdir runs/default "
                     f"--output colorized/ photo.jpg`.")
  if o.workdir is not None and o.model is not None:
    raise UsageError("give one of --workdir (a training run) and --model "
                     "(an artifact), not both; with neither, the shipped "
                     "model colors.")
  videos = [i for i in inputs if film.is_video(i)]
  stills = [i for i in inputs if not film.is_video(i)]
  clips = [(clip, pathlib.Path(o.output).expanduser() / pathlib.Path(clip).name)
           for clip in videos]
  # Before the model is read: a refused output costs nothing.
  photo_paths.check_output(
      o.output, inputs,
      [(file, photo_paths.output_path(o.output, name, o.file_format))
       for file, name in photo_paths.find_inputs(stills)]
      + [(pathlib.Path(clip), target) for clip, target in clips])
  colorizer = _colorizer(o)
  start = time.perf_counter()
  summary = photo_paths.colorize_files(
      colorizer, stills, o.output, file_format=o.file_format,
      jpeg_quality=o.jpeg_quality, progress=bool(stills),
      overwrite=o.overwrite)
  seconds = time.perf_counter() - start
  if summary["written"]:
    # Decode, resize, network (compilation included), recombine, encode;
    # the stages overlap, so their host seconds may add up to more.
    busy = ", ".join(f"{stage} {t:.1f}"
                     for stage, t in summary["seconds"].items())
    print(f"{len(summary['written'])} image(s) in {seconds:.1f} s: "
          f"{len(summary['written']) / seconds:.2f} images/s end to end "
          f"(host seconds per stage: {busy}).", file=sys.stderr)
  for clip, target in clips:
    _colorize_clip(colorizer, clip, target, o, summary)
  for file, reason in summary["failed"].items():
    print(f"Skipped {file}: {reason}", file=sys.stderr)
  if summary["skipped"]:
    print(f"Skipped {len(summary['skipped'])} file(s) whose output exists "
          "(use --overwrite).", file=sys.stderr)
  if summary["written"]:
    print(f"Colorized {len(summary['written'])} file(s) into {o.output} "
          f"with output {colorizer.output!r} of step {colorizer.step} on "
          f"{len(colorizer.devices)} {colorizer.devices[0].platform.upper()} "
          f"device(s).")
  else:
    print(f"Nothing was written to {o.output}: no file was colorized.")
  return 1 if summary["failed"] else 0


def _colorizer(o: Options) -> Colorizer:
  if o.workdir is None and o.model is None:
    if o.checkpoint is not None or o.network_output is not None:
      raise UsageError("--checkpoint and --network_output choose within a "
                       "run: give its --workdir.")
    print(shipped_model.notice(), file=sys.stderr)
    o = dataclasses.replace(o, model=str(shipped_model.directory()))
  if o.model is not None:
    if o.checkpoint is not None or o.network_output is not None:
      raise UsageError("--checkpoint and --network_output choose within a "
                       "run; an artifact holds one step and one output.")
    return Colorizer.from_pretrained(o.model, batch_size=o.batch_size,
                                     render_size=o.render_size
                                     ).with_upsample(o.upsample)
  return Colorizer.from_workdir(o.workdir, o.checkpoint,
                                batch_size=o.batch_size,
                                output=o.network_output,
                                render_size=o.render_size
                                ).with_upsample(o.upsample)


def _colorize_clip(colorizer: Colorizer, clip: str, target: pathlib.Path,
                   o: Options, summary: dict) -> None:
  if not o.overwrite and os.path.lexists(target):
    summary["skipped"].append(str(target))
    return
  try:
    done = film.colorize_video(colorizer, clip, target,
                               temporal_smoothing=o.temporal_smoothing,
                               cut_threshold=o.cut_threshold)
  except film.VideoError as e:
    summary["failed"][clip] = str(e)
    return
  summary["written"].append(str(target))
  print(f"{target}: {done['frames']} frames, {done['cuts']} cut(s), "
        f"{done['fps']:g} fps, {done['size'][0]}x{done['size'][1]}"
        + (f"; the decoder stopped early: {done['decode_error']}"
           if done["decode_error"] else ""), file=sys.stderr)
