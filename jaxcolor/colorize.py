"""Colorize photographs with a trained run, at their own size and detail.

  python -m jaxcolor.colorize --workdir runs/default --output colorized/ \\
      old_photo.jpg scans/ [--checkpoint 2000] [--format jpeg] [--batch_size 8] \\
      [--network_output generator]

Each INPUT is an image file or a folder (searched recursively). Outputs go to
OUTPUT as `<stem>.png` (or `.jpg`), keeping the input's file name and, for
folders, its subfolders. From Python (a notebook):

  from jaxcolor import colorize
  colorizer = colorize.Colorizer.from_workdir("runs/default")
  rgb = colorizer.colorize(gray)        # [H, W] or [H, W, 3] -> uint8 [H, W, 3]

How an image of any size is colorized: the network runs at its training
resolution on the image's lightness, squeezed to image_size x image_size
(as Zhang et al.'s colorization demo resizes every photo to 256 x 256); its
a*b* are resized back to the photo's size (bilinear) and joined to the photo's
own full-resolution L*. Chrominance carries little fine detail (the premise
of colorizing in Lab), so the result keeps every edge of the input, and L* is
the input's exactly (up to RGB gamut clipping). A colour photo is reduced to
its L* first, so it can be used to check the model against the original.

The run is rebuilt from WORKDIR/config.json and only the train state of the
checkpoint is read. Files are decoded as for training (jaxcolor.data):
grayscale, RGB, RGBA and LA (over white), palette, CMYK and 16-bit images, with
their EXIF orientation applied. Runs on CPU when JAX sees no accelerator.
"""

import os
import pathlib
import sys
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image
from tqdm import tqdm

from jaxcolor import checkpointing
from jaxcolor import color
from jaxcolor import experiment
from jaxcolor import rundir
from jaxcolor import systems
from jaxcolor.data import sources
from jaxcolor.data import transforms

FORMATS = {"png": ".png", "jpeg": ".jpg"}
# Pixels per call of the full-resolution colour conversions: one compiled
# shape for every image size.
_CHUNK_PIXELS = 1 << 20


class Colorizer:
  """A restored system that colorizes whole images (see module docstring)."""

  def __init__(self, system: systems.System, state: Any, *, image_size: int,
               step: int | None = None, batch_size: int = 8,
               output: str | None = None):
    """`output`: which of the system's outputs colours the photos (e.g.
    'generator' for the raw weights of a run that keeps an EMA); None: its
    final output, the first that `System.colorize` returns."""
    if not getattr(system, "colorizes", True):
      raise ValueError(f"System {type(system).__name__} does not colorize.")
    self.system = system
    self.state = state
    self.image_size = image_size
    self.step = step
    self.batch_size = batch_size
    # The outputs in `colorize`'s own order (a traced dict comes back with
    # its keys sorted, which would put 'generator' before 'generator_ema').
    names = []
    jax.eval_shape(
        lambda s, x: names.extend(system.colorize(s, x)) or 0, state,
        jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32))
    if output is not None and output not in names:
      raise ValueError(f"output={output!r}: this run's outputs are "
                       f"{', '.join(names)}.")
    self.output = output or names[0]

    def predict_ab(state, rgb):
      lightness, _ = color.split_lab(rgb)
      outputs = system.colorize(state, lightness)
      return color.net_to_ab(outputs[self.output].astype(jnp.float32))

    self._predict_ab = jax.jit(predict_ab)

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, checkpoint: int | None = None,
                   *, batch_size: int = 8, output: str | None = None
                   ) -> "Colorizer":
    """The run in `workdir` at step `checkpoint` (None: the newest)."""
    run_dir = rundir.RunDir(workdir)
    config = run_dir.read_config()
    if not run_dir.checkpoint_dir.is_dir():
      raise FileNotFoundError(f"No checkpoints in {workdir}.")
    checkpointer = checkpointing.Checkpointer(run_dir.checkpoint_dir, keep=1,
                                              asynchronous=False)
    try:
      steps = checkpointer.all_steps()
      if not steps:
        raise FileNotFoundError(f"No checkpoints in {checkpointer.directory}.")
      step = max(steps) if checkpoint is None else checkpoint
      if step not in steps:
        raise FileNotFoundError(
            f"No checkpoint at step {step} in {checkpointer.directory}; saved "
            f"steps: {', '.join(map(str, steps))}.")
      # The run's own config, checked when it trained (on its devices).
      built = experiment.build(config, data="none", validate=False,
                               devices=jax.local_devices()[:1])
      state = built.restore(checkpointer, step)
    finally:
      checkpointer.close()
    system = built.system
    return cls(system, state, image_size=config.image_size, step=step,
               batch_size=batch_size, output=output)

  def colorize(self, image: np.ndarray | Image.Image) -> np.ndarray:
    """One image (array or Pillow image) -> uint8 RGB [H, W, 3], same size."""
    return self.colorize_batch([image])[0]

  def colorize_batch(self, images: Sequence[np.ndarray | Image.Image]
                     ) -> list[np.ndarray]:
    """Images of any sizes -> uint8 RGB arrays of the same sizes.

    Arrays: [H, W] or [H, W, 1] gray, [H, W, 3] RGB, [H, W, 4] RGBA; uint8,
    uint16 (0..65535) or float in [0, 1].
    """
    prepared = [_as_image(image) for image in images]
    results = []
    for start in range(0, len(prepared), self.batch_size):
      chunk = prepared[start:start + self.batch_size]
      small = np.stack([_model_input(im, self.image_size) for im in chunk])
      # A fixed batch shape: one compilation whatever the number of images.
      padded = np.zeros((self.batch_size,) + small.shape[1:], np.uint8)
      padded[:len(small)] = small
      ab = np.asarray(self._predict_ab(self.state, padded))
      results += [_recombine(im, ab[i]) for i, im in enumerate(chunk)]
    return results


# -- images --------------------------------------------------------------------


def _as_image(image: np.ndarray | Image.Image) -> Image.Image:
  """An array or Pillow image -> Pillow 'L' or 'RGB' (alpha over white)."""
  if isinstance(image, Image.Image):
    return transforms._to_rgb(image, [])  # noqa: SLF001 (same conversions as training)
  array = np.asarray(image)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
    raise ValueError(f"Expected an image [H, W], [H, W, 1], [H, W, 3] or "
                     f"[H, W, 4]; got shape {array.shape}.")
  if array.dtype == np.uint16:
    array = array / 65535.0
  if np.issubdtype(array.dtype, np.floating):
    array = np.round(np.clip(array, 0.0, 1.0) * 255.0)
  array = array.astype(np.uint8)
  mode = "L" if array.ndim == 2 else {3: "RGB", 4: "RGBA"}[array.shape[-1]]
  return transforms._to_rgb(Image.fromarray(array, mode), [])  # noqa: SLF001


def _model_input(image: Image.Image, size: int) -> np.ndarray:
  """The whole image squeezed to [size, size, 3] uint8, resized as in training."""
  small = image.resize((size, size), Image.Resampling.BICUBIC)
  return np.asarray(small.convert("RGB"))


def _in_chunks(fn, pixels: np.ndarray) -> np.ndarray:
  """`fn` over [N, 3] pixels in fixed-size chunks (one compiled shape)."""
  out = np.empty(pixels.shape[:1] + (3,), np.float32)
  for start in range(0, len(pixels), _CHUNK_PIXELS):
    part = pixels[start:start + _CHUNK_PIXELS]
    padded = np.zeros((_CHUNK_PIXELS, 3), part.dtype)
    padded[:len(part)] = part
    out[start:start + len(part)] = np.asarray(fn(padded))[:len(part)]
  return out


def _upsample_ab(ab: np.ndarray, width: int, height: int) -> np.ndarray:
  """[S, S, 2] a*b* -> [height, width, 2], bilinear (antialiased if smaller)."""
  channels = [np.asarray(Image.fromarray(np.ascontiguousarray(ab[..., c]), "F")
                         .resize((width, height), Image.Resampling.BILINEAR))
              for c in range(2)]
  return np.stack(channels, axis=-1)


def _recombine(image: Image.Image, ab: np.ndarray) -> np.ndarray:
  """The image's full-resolution L* with the upsampled a*b* -> uint8 RGB."""
  width, height = image.size
  rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
  lightness = _in_chunks(color.rgb_to_lab, rgb)[:, :1]
  lab = np.concatenate([lightness,
                        _upsample_ab(ab, width, height).reshape(-1, 2)], axis=-1)
  out = _in_chunks(color.lab_to_rgb, lab)
  return np.round(out * 255.0).astype(np.uint8).reshape(height, width, 3)


# -- files ---------------------------------------------------------------------


def find_inputs(inputs: Iterable[str]) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """(file, output path relative to OUTPUT without suffix) for each input.

  A file keeps its stem; a folder's images keep their subfolders. When two
  inputs would share an output name (photo.jpg and photo.png), each of them
  gets its extension in the name (photo_jpg, photo_png).
  """
  found = []
  for item in inputs:
    path = pathlib.Path(item).expanduser()
    if path.is_dir():
      for relative in sources.list_images(path):
        relative = pathlib.Path(relative)
        found.append((path / relative, relative.with_suffix("")))
    elif path.is_file():
      found.append((path, pathlib.Path(path.stem)))
    else:
      raise FileNotFoundError(f"No such file or folder: {item}")
  seen_files, distinct = set(), []
  for file, name in found:  # A file named twice (itself and its folder).
    if file.resolve() not in seen_files:
      seen_files.add(file.resolve())
      distinct.append((file, name))
  counts: dict[pathlib.Path, int] = {}
  for _, name in distinct:
    counts[name] = counts.get(name, 0) + 1
  unique, taken = [], set()
  for file, name in distinct:
    if counts[name] > 1:
      name = name.with_name(f"{name.name}_{file.suffix.lstrip('.').lower()}")
    base, number = name, 2
    while name in taken:  # Same stem and extension in different inputs.
      name, number = base.with_name(f"{base.name}_{number}"), number + 1
    taken.add(name)
    unique.append((file, name))
  return unique


def load_image(path: pathlib.Path) -> Image.Image:
  """Decodes a file as training does (EXIF, CMYK, 16-bit, alpha, palette)."""
  image, events = transforms.decode(path.read_bytes())
  if image is None:
    raise ValueError(f"cannot use {path}: {events[-1]}")
  return image


def save_image(rgb: np.ndarray, path: pathlib.Path, file_format: str,
               jpeg_quality: int = 95) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(rgb)
  if file_format == "jpeg":
    image.save(path, format="JPEG", quality=jpeg_quality)
  else:
    image.save(path, format="PNG")


def colorize_files(colorizer: Colorizer, inputs: Sequence[str], output: str, *,
                   file_format: str = "png", jpeg_quality: int = 95,
                   progress: bool = True) -> dict[str, Any]:
  """Colorizes every input file or folder into `output`.

  Returns:
    {'written': [paths], 'failed': {input path: reason}}.
  """
  if file_format not in FORMATS:
    raise ValueError(f"file_format={file_format!r}: one of {', '.join(FORMATS)}.")

  jobs = find_inputs(inputs)
  output_dir = pathlib.Path(output)
  written, failed = [], {}
  bar = tqdm(total=len(jobs), unit="image", disable=not progress)
  for start in range(0, len(jobs), colorizer.batch_size):
    batch = []
    for file, name in jobs[start:start + colorizer.batch_size]:
      try:
        batch.append((file, name, load_image(file)))
      except (OSError, ValueError) as e:
        failed[str(file)] = str(e)
        bar.update(1)
    if not batch:
      continue
    results = colorizer.colorize_batch([image for _, _, image in batch])
    for (file, name, _), rgb in zip(batch, results):
      target = output_dir / name.with_name(name.name + FORMATS[file_format])
      save_image(rgb, target, file_format, jpeg_quality)
      written.append(str(target))
      bar.update(1)
  bar.close()
  return {"written": written, "failed": failed}


def main(argv: Sequence[str]) -> None:

  FLAGS = flags.FLAGS
  inputs = list(argv[1:])
  if not inputs:
    print("Usage: python -m jaxcolor.colorize --workdir DIR --output OUT "
          "INPUT [INPUT ...]", file=sys.stderr)
    sys.exit(2)
  try:
    colorizer = Colorizer.from_workdir(FLAGS.workdir, FLAGS.checkpoint,
                                       batch_size=FLAGS.batch_size,
                                       output=FLAGS.network_output)
    summary = colorize_files(colorizer, inputs, FLAGS.output,
                             file_format=FLAGS.format,
                             jpeg_quality=FLAGS.jpeg_quality)
  except (FileNotFoundError, ValueError) as e:
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(2)
  for file, reason in summary["failed"].items():
    print(f"Skipped {file}: {reason}", file=sys.stderr)
  print(f"Colorized {len(summary['written'])} image(s) into {FLAGS.output} "
        f"with output {colorizer.output!r} of the checkpoint at step "
        f"{colorizer.step} on "
        f"{jax.devices()[0].platform.upper()}.")
  if summary["failed"]:
    sys.exit(1)


def _define_flags() -> None:

  flags.DEFINE_string("workdir", None, "The training run's directory.")
  flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default: newest.")
  flags.DEFINE_string("output", None, "Folder for the colorized images.")
  flags.DEFINE_enum("format", "png", list(FORMATS), "Output file format.")
  flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality (--format=jpeg).")
  flags.DEFINE_integer("batch_size", 8, "Images per network call.")
  flags.DEFINE_string("network_output", None,
                      "Which of the run's outputs colours the photos, e.g. "
                      "'generator' (raw weights) beside 'generator_ema'; "
                      "default: the system's final output.")
  flags.mark_flags_as_required(["workdir", "output"])


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
