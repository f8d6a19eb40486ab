"""Colorize photographs with a trained run or a model artifact.

  python -m jaxcolor.colorize --workdir runs/default --output colorized/ \\
      old_photo.jpg scans/ [--checkpoint 2000] [--format jpeg] [--batch_size 8] \\
      [--network_output generator] [--render_size 512]
  python -m jaxcolor.colorize --model PATH_OR_URL --output colorized/ photos/

(or `jaxcolor colorize ...`; jaxcolor/cli.py starts both and holds the
`--help` text).

Each INPUT is an image file, a folder of images (searched recursively) or a
video file (jaxcolor/video.py: frames batched, a*b* smoothed within shots,
audio kept; --temporal_smoothing, --cut_threshold). Outputs go to
OUTPUT as `<stem>.png` (or `.jpg`), keeping the input's file name and, for
folders, its subfolders; a video as OUTPUT/<its file name>.

The inputs are never written over, and OUTPUT is checked before the model
is read (`photo_files.check_output`): it must be a folder (or not exist yet),
no output path may be an input file, and OUTPUT may not be an input folder
nor lie inside one. Colorized files beside the photos would be taken for
photos by the next run over that folder, and their names could collide
with the originals', so that is refused outright rather than allowed where
no name collides. An output file that exists already (an earlier run's) is
kept and its input skipped, and the command says how many; --overwrite
replaces them. From Python (a notebook):

  from jaxcolor import colorize
  colorizer = colorize.Colorizer.from_workdir("runs/default")
  colorizer = colorize.Colorizer.from_pretrained("https://.../model.tar.gz")
  rgb = colorizer.colorize(gray)        # [H, W] or [H, W, 3] -> uint8 [H, W, 3]

The network runs on the photo's lightness at the training size (squeezed to
its square) or, with `render_size`, with the shorter side at that size and
the aspect kept; its a*b* are joined to the photo's full-resolution L*
(jaxcolor/photo_io.py). A color photo is reduced to its L* first, so it can
be used to check the model against the original.

A run is rebuilt from WORKDIR/config.json and only the arrays its colorizing
output reads are kept (`Colorizer.arrays`: no optimizer state, no
discriminator): exactly what `python -m jaxcolor.export` writes into an
artifact (jaxcolor/artifact.py). Files are decoded as for training: grayscale,
RGB, RGBA and LA (over white), palette, CMYK and 16-bit images, with their
EXIF orientation applied. Runs on CPU when JAX sees no accelerator.

Throughput: each batch is split over every local accelerator
(`default_devices`), and host threads decode the next batch and recombine
and encode the last while the devices work (`photo_files.colorize_files`); the
command prints images/s and each stage's host seconds at the end.
`python -m jaxcolor.benchmark --colorize=FOLDER` times the path stage by
stage (docs/benchmarks.md).
"""

import copy
import os
import pathlib
import re
import sys
import time
from typing import Any, Sequence

import jax
import jax.extend as jex
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from PIL import Image

from jaxcolor import artifact
from jaxcolor import backends
from jaxcolor import checkpointing
from jaxcolor import cli
from jaxcolor import color
from jaxcolor import configuration
from jaxcolor import experiment
from jaxcolor import photo_files
from jaxcolor import photo_io
from jaxcolor import rundir
from jaxcolor import systems
from jaxcolor import video
from jaxcolor.errors import ConfigError
from jaxcolor.photo_files import (FORMATS, colorize_files, find_inputs,
                                  load_image, save_image)

__all__ = ["Colorizer", "colorize_files", "find_inputs", "load_image",
           "save_image", "FORMATS"]


def default_devices() -> list[jax.Device]:
  """The devices a colorizer splits its batch over by default: every local
  accelerator; on the CPU one device (simulated CPU devices share the host's
  cores, so splitting there only adds work)."""
  devices = jax.local_devices()
  return devices if devices[0].platform != "cpu" else devices[:1]


class Colorizer:
  """A trained system that colorizes whole images (see module docstring)."""

  def __init__(self, system: systems.System, state: Any, *, image_size: int,
               step: int | None = None, batch_size: int = 8,
               output: str | None = None, render_size: int | None = None,
               devices: Sequence[jax.Device] | None = None):
    """`state`: the system's state (a checkpoint's). `output`: which of the
    system's outputs colors the photos (e.g. 'generator' for the raw
    weights of a run that keeps an EMA); None: its final output, the first
    that `System.colorize` returns. `render_size`: the shorter side the
    network sees (None: the training size's square). `devices`: the devices
    a batch is split over (None: `default_devices()`); the batch size is
    rounded up to a multiple of their number."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), state)
    self._setup(system, abstract, image_size, step, batch_size, output,
                render_size, devices)
    flat = dict(zip(self._paths, jax.tree.leaves(state)))
    self.arrays = self._place({path: flat[path] for path in self.needed})

  def _setup(self, system, abstract, image_size, step, batch_size, output,
             render_size, devices=None):
    if not getattr(system, "colorizes", True):
      raise ValueError(f"System {type(system).__name__} does not colorize.")
    self.system, self.image_size, self.step = system, image_size, step
    self.batch_size = batch_size
    self._abstract, self._treedef = jax.tree.flatten(abstract)
    self._paths = [_path_name(p) for p, _ in
                   jax.tree_util.tree_flatten_with_path(abstract)[0]]
    # The outputs in `colorize`'s own order (a traced dict comes back with
    # its keys sorted, which would put 'generator' before 'generator_ema').
    names = []
    square = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
    jax.eval_shape(lambda s, x: names.extend(system.colorize(s, x)) or 0,
                   abstract, square)
    if output is not None and output not in names:
      raise ValueError(f"output={output!r}: this run's outputs are "
                       f"{', '.join(names)}.")
    self.output = output or names[0]
    self.needed = _read_paths(
        lambda s, x: system.colorize(s, x)[self.output], abstract, square,
        self._paths)

    def predict_ab(arrays, rgb):
      leaves = [arrays[p] if p in arrays else jnp.zeros(a.shape, a.dtype)
                for p, a in zip(self._paths, self._abstract)]
      state = jax.tree.unflatten(self._treedef, leaves)
      lightness, _ = color.split_lab(rgb)
      ab = system.colorize(state, lightness)[self.output]
      return color.net_to_ab(ab.astype(jnp.float32))

    # Arrays that the output does not read are zeros inside the program,
    # which XLA drops with the computations that would have used them.
    self.network_fn = predict_ab
    options = backends.compiler_options(system.config, system.platform)
    self.devices = list(devices) if devices else default_devices()
    if len(self.devices) > 1:
      # Data parallel: the batch split over the devices, the arrays on each.
      mesh = jax.sharding.Mesh(np.array(self.devices), ("batch",))
      split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
          "batch"))
      whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
      self._predict_ab = jax.jit(predict_ab, in_shardings=(whole, split),
                                 out_shardings=split, compiler_options=options)
      self._array_placement = whole
      self.batch_size = -(-batch_size // len(self.devices)) * len(self.devices)
    else:
      self._predict_ab = jax.jit(predict_ab, compiler_options=options)
      self._array_placement = self.devices[0]
    self.multiple = self._size_multiple() if render_size else 1
    if render_size is not None and render_size < self.multiple:
      raise ValueError(
          f"render_size={render_size}: this network needs at least "
          f"{self.multiple} pixels (its size multiple).")
    self.render_size = render_size

  def _size_multiple(self) -> int:
    """The smallest power of two whose multiples the network takes at any
    aspect (tried on 3m x 5m; nothing compiles)."""
    for k in range(10):
      m = 2 ** k
      shape = (1, 3 * m, 5 * m, 3)
      try:
        out = jax.eval_shape(self.network_fn, self._abstract_arrays(),
                             jax.ShapeDtypeStruct(shape, jnp.uint8))
      except (ValueError, TypeError):
        continue
      if out.shape[1:3] == shape[1:3]:
        return m
    raise ValueError("This network takes no image size the render size can "
                     "pad to (tried multiples of 1 to 512).")

  def _place(self, arrays: dict) -> dict:
    """The arrays on this colorizer's devices (a copy on each)."""
    return jax.device_put(arrays, self._array_placement)

  def _abstract_arrays(self) -> dict:
    return {p: a for p, a in zip(self._paths, self._abstract)
            if p in self.needed}

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, checkpoint: int | None = None,
                   *, batch_size: int = 8, output: str | None = None,
                   render_size: int | None = None,
                   devices: Sequence[jax.Device] | None = None
                   ) -> "Colorizer":
    """The run in `workdir` at step `checkpoint` (None: the newest).

    Raises:
      FileNotFoundError: no config.json, no checkpoint, or none at the step.
      ConfigError: config.json is not JSON, lacks a field the run's system
        reads, or holds a value it cannot take (each naming the file);
        `checkpointing.DamagedCheckpointError`, a subclass, for a
        checkpoint whose files are missing or cut short (naming its folder).
    """
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
      built = _build_run(config, run_dir.config_path)
      state = built.restore(checkpointer, step)
    finally:
      checkpointer.close()
    colorizer = cls(built.system, state, image_size=config.image_size,
                    step=step, batch_size=batch_size, output=output,
                    render_size=render_size, devices=devices)
    colorizer.config = config
    return colorizer

  @classmethod
  def from_pretrained(cls, source: str | os.PathLike, *, batch_size: int = 8,
                      render_size: int | None = None,
                      sha256: str | None = None,
                      devices: Sequence[jax.Device] | None = None,
                      limits: artifact.Limits = artifact.LIMITS
                      ) -> "Colorizer":
    """A model artifact (`python -m jaxcolor.export`): a directory, an
    archive, or a file:// or https:// URL (see jaxcolor/artifact.py).

    The artifact is hostile until checked: `artifact.read` checks its files
    and model.json's fields, its config must pass a run's checks of the
    common fields (`configuration.validate`) and build a network, and every
    array the output reads must have the shape and dtype that network
    declares, so a bad artifact fails here, in one line, rather than at the
    first colorize. `limits`: what the artifact may ask of this machine.

    Raises:
      artifact.ArtifactError: a bad source or artifact; the message names
        the file, field or array.
      FileNotFoundError: a local path that does not exist.
      ValueError: a `render_size` the network cannot take.
    """
    directory = artifact.fetch(source, sha256=sha256, limits=limits)
    meta, arrays = artifact.read(directory, limits=limits)
    meta_path = directory / artifact.MODEL_JSON
    colorizer = cls.__new__(cls)
    try:
      config = ml_collections.ConfigDict(meta["config"])
      _check_artifact_config(config, meta_path)
      built = experiment.build(config, data="none", validate=False,
                               devices=jax.local_devices()[:1])
      colorizer._setup(built.system, built.abstract_state, meta["image_size"],
                       meta.get("step"), batch_size, meta["output"], None,
                       devices)
    except artifact.ArtifactError:
      raise
    except Exception as e:  # A hostile config can fail anywhere in the build.
      raise artifact.ArtifactError(
          f"{meta_path}: its config and output do not build a colorizer: "
          f"{artifact.error_line(e)}") from None
    weights = directory / artifact.VARIABLES
    missing = sorted(p for p in colorizer.needed if p not in arrays)
    if missing:
      raise artifact.ArtifactError(
          f"{weights} lacks {len(missing)} array(s) its output "
          f"{meta['output']!r} reads, first {missing[0]}.")
    # Checked here, not at the first call: a wrong shape would otherwise
    # surface as a shape error deep in the network, or not at all.
    abstract = dict(zip(colorizer._paths, colorizer._abstract))
    for path in sorted(colorizer.needed):
      have, need = arrays[path], abstract[path]
      if tuple(have.shape) != tuple(need.shape):
        raise artifact.ArtifactError(
            f"{weights}: {path} has shape {artifact.shape_text(have.shape)}"
            f", the network needs {artifact.shape_text(need.shape)}.")
      if np.dtype(have.dtype) != np.dtype(need.dtype):
        raise artifact.ArtifactError(
            f"{weights}: {path} has dtype {have.dtype}, the network needs "
            f"{np.dtype(need.dtype)}.")
    colorizer.arrays = colorizer._place({p: arrays[p]
                                         for p in colorizer.needed})
    colorizer.config, colorizer.meta = config, meta
    # The render size is the caller's choice, not the artifact's: its errors
    # stay plain ValueErrors.
    if render_size is not None:
      colorizer = colorizer.with_render_size(render_size)
    return colorizer

  @classmethod
  def for_compiling(cls, system: systems.System, abstract_state: Any, *,
                    image_size: int, batch_size: int,
                    devices: Sequence[jax.Device]) -> "Colorizer":
    """A colorizer of shapes alone, whose `lowered_abstract` compiles for
    `devices` (a TPU topology's: jaxcolor/compile_only.py) without placing
    any weights."""
    colorizer = cls.__new__(cls)
    colorizer._setup(system, abstract_state, image_size, None, batch_size,
                     None, None, devices)
    placement = colorizer._array_placement
    if isinstance(placement, jax.Device):
      placement = jax.sharding.SingleDeviceSharding(placement)
    colorizer.arrays = {
        path: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=placement)
        for path, a in colorizer._abstract_arrays().items()}
    return colorizer

  def lowered_abstract(self) -> jax.stages.Lowered:
    """The network program for a full batch of training-size squares,
    lowered from shapes alone."""
    size = self.image_size
    sharding = (jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.array(self.devices), ("batch",)),
        jax.sharding.PartitionSpec("batch")) if len(self.devices) > 1
        else jax.sharding.SingleDeviceSharding(self.devices[0]))
    return self.lowered(jax.ShapeDtypeStruct(
        (self.batch_size, size, size, 3), np.uint8, sharding=sharding))

  def with_render_size(self, render_size: int | None) -> "Colorizer":
    """The same colorizer (sharing its arrays) at another render size.

    Raises:
      ValueError: a render size the network cannot take.
    """
    other = copy.copy(self)
    other._setup(self.system, jax.tree.unflatten(self._treedef, self._abstract),
                 self.image_size, self.step, self.batch_size, self.output,
                 render_size, self.devices)
    return other

  def colorize(self, image: np.ndarray | Image.Image) -> np.ndarray:
    """One image (array or Pillow image) -> uint8 RGB [H, W, 3], same size."""
    return self.colorize_batch([image])[0]

  def colorize_batch(self, images: Sequence[np.ndarray | Image.Image]
                     ) -> list[np.ndarray]:
    """Images of any sizes -> uint8 RGB arrays of the same sizes.

    Arrays: [H, W] or [H, W, 1] gray, [H, W, 3] RGB, [H, W, 4] RGBA; uint8,
    uint16 (0..65535) or float in [0, 1].
    """
    prepared = [photo_io.as_image(image) for image in images]
    return [photo_io.recombine(image, ab)
            for image, ab in zip(prepared, self.predict_ab(prepared))]

  def lowered(self, batch: np.ndarray) -> jax.stages.Lowered:
    """The network program for `batch`'s shape, lowered (for its cost)."""
    return self._predict_ab.lower(self.arrays, batch)

  def network_ab(self, batch: np.ndarray) -> np.ndarray:
    """The network alone: uint8 RGB [B, h, w, 3] (only its L* is read) at the
    network's input size -> a*b* [B, h, w, 2] float32, on the host."""
    return np.asarray(self._predict_ab(self.arrays, batch))

  def predict_ab(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
    """The network's a*b* of each Pillow image (`photo_io.as_image`), at the
    network's resolution: [h, w, 2] float32 in Lab units, before the
    upsampling to the photo's size (video smooths them over time here)."""
    prepared = images
    inputs = []
    for image in prepared:
      if self.render_size is None:
        size = self.image_size
        inputs.append((photo_io.squeezed(image, size), (size, size)))
      else:
        inputs.append(photo_io.rendered(image, self.render_size,
                                        self.multiple))
    ab = [None] * len(prepared)
    # One network call per run of equal input shapes, at a fixed batch
    # size: one compilation per shape whatever the number of images.
    start = 0
    while start < len(inputs):
      shape = inputs[start][0].shape
      end = start
      while (end < len(inputs) and end - start < self.batch_size
             and inputs[end][0].shape == shape):
        end += 1
      padded = np.zeros((self.batch_size,) + shape, np.uint8)
      for i in range(start, end):
        padded[i - start] = inputs[i][0]
      out = self.network_ab(padded)
      for i in range(start, end):
        height, width = inputs[i][1]
        ab[i] = out[i - start, :height, :width]
      start = end
    return ab


def _build_run(config: ml_collections.ConfigDict,
               config_path: Any) -> experiment.Experiment:
  """The experiment of a run's config.json, its faults named with the file.

  The config is not validated again: it was checked when the run trained,
  on its devices, whose count the batch sizes were checked for.

  Raises:
    ConfigError: '<config_path>: missing 'generator'' for a field the system
      reads and the file lacks; the system's own ConfigError (a value it
      cannot take), prefixed with the file.
  """
  try:
    return experiment.build(config, data="none", validate=False,
                            devices=jax.local_devices()[:1])
  except ConfigError as e:
    raise ConfigError(f"{config_path}: {e}") from None
  except (KeyError, AttributeError) as e:
    field = _missing_field(e, config)
    if field is None:  # Not a lookup in this config: a fault of the code.
      raise
    raise ConfigError(f"{config_path}: missing {field!r}.") from None


def _missing_field(error: BaseException,
                   config: ml_collections.ConfigDict) -> str | None:
  """'generator' or 'generator.name': the field of `config` whose lookup
  raised `error`, or None when `error` came from elsewhere.

  ml_collections raises from the ConfigDict looked in, so the innermost
  frame's `self` is that section; its place in `config` gives the path.
  """
  frame = error.__traceback__
  while frame is not None and frame.tb_next is not None:
    frame = frame.tb_next
  section = frame.tb_frame.f_locals.get("self") if frame else None
  key = re.search(r"'([^']+)'", str(error))
  if key is None or not isinstance(section, ml_collections.ConfigDict):
    return None

  def place(node, prefix):
    if node is section:
      return prefix
    for name, child in node.items():
      if isinstance(child, ml_collections.ConfigDict):
        found = place(child, prefix + (name,))
        if found is not None:
          return found
    return None

  prefix = place(config, ())
  if prefix is None or key.group(1) in section:
    return None
  return ".".join(prefix + (key.group(1),))


def _check_artifact_config(config: ml_collections.ConfigDict,
                           meta_path: pathlib.Path) -> None:
  """An artifact's config through the checks a run's passes before it
  trains, so that an unknown key or a bad value fails here, named, rather
  than somewhere in the build or at the first photo.

  The common fields only (`configuration.validate`), for one device and one
  process: the batch sizes were checked for the devices the run trained on,
  and only its network is built here. The datasets are not opened (an
  artifact holds no data, and export cut their paths to names), and the
  system's own `validate` does not run: the staged systems' reads the
  pretrained backbone's file, whose weights the artifact already holds.

  Raises:
    artifact.ArtifactError: '<meta_path>: its config does not validate: ...'
      naming the key. An unknown system is a ConfigError, as in the build.
  """
  fields = systems.get_class(config.system).config_fields
  try:
    configuration.validate(config, device_count=1, process_count=1,
                           extra_fields=fields)
  except KeyError as e:  # ml_collections: "'key'\nDid you mean ...".
    key = str(e.args[0]).splitlines()[0] if e.args else ""
    raise artifact.ArtifactError(f"{meta_path}: its config does not "
                                 f"validate: it lacks {key}.") from None
  except Exception as e:  # ConfigError names the key; any JSON value may come.
    raise artifact.ArtifactError(f"{meta_path}: its config does not "
                                 f"validate: {artifact.error_line(e)}"
                                 ) from None


def _path_name(path) -> str:
  """'generator/params/down_0/kernel' for a pytree key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(
      k, "idx", k)))) for k in path)


def _read_paths(fn, abstract, x, paths: list[str]) -> set[str]:
  """The leaves of `abstract` (by path) that `fn(abstract, x)` reads.

  A backward pass over the traced program: an equation is live when one of
  its results is, and a live equation's operands are read. Calls into
  sub-programs count as whole (all their operands are read when any
  result is), so the set may be larger than needed, never smaller.
  """
  closed = jax.make_jaxpr(fn)(abstract, x)
  live = {v for v in closed.jaxpr.outvars if isinstance(v, jex.core.Var)}
  for eqn in reversed(closed.jaxpr.eqns):
    if eqn.effects or any(v in live for v in eqn.outvars):
      live.update(v for v in eqn.invars if isinstance(v, jex.core.Var))
  leaves = closed.jaxpr.invars[:len(paths)]
  return {path for path, var in zip(paths, leaves) if var in live}


def main(argv: Sequence[str]) -> None:
  """`jaxcolor colorize`: runs under `cli.run`, which hides the libraries'
  log lines (Orbax's on every restore would bury the one line a user
  reads)."""
  FLAGS = flags.FLAGS
  inputs = list(argv[1:])
  if not inputs:
    print(f"Error: name the photos, folders or videos to colorize after the "
          f"flags, e.g. `{cli.program()} --workdir runs/default --output "
          f"colorized/ photo.jpg`.", file=sys.stderr)
    sys.exit(2)
  if (FLAGS.workdir is None) == (FLAGS.model is None):
    print("Error: give exactly one of --workdir (a training run) and --model "
          "(an artifact).", file=sys.stderr)
    sys.exit(2)
  try:
    videos = [i for i in inputs if video.is_video(i)]
    stills = [i for i in inputs if not video.is_video(i)]
    clips = [(clip, pathlib.Path(FLAGS.output).expanduser()
              / pathlib.Path(clip).name) for clip in videos]
    # Before the model is read: a refused --output costs nothing.
    photo_files.check_output(
        FLAGS.output, inputs,
        [(file, photo_files.output_path(FLAGS.output, name, FLAGS.format))
         for file, name in find_inputs(stills)]
        + [(pathlib.Path(clip), target) for clip, target in clips])
    if FLAGS.model is not None:
      if FLAGS.checkpoint is not None or FLAGS.network_output is not None:
        raise ValueError("--checkpoint and --network_output choose within a "
                         "run; an artifact holds one step and one output.")
      colorizer = Colorizer.from_pretrained(
          FLAGS.model, batch_size=FLAGS.batch_size,
          render_size=FLAGS.render_size)
    else:
      colorizer = Colorizer.from_workdir(
          FLAGS.workdir, FLAGS.checkpoint, batch_size=FLAGS.batch_size,
          output=FLAGS.network_output, render_size=FLAGS.render_size)
    start = time.perf_counter()
    summary = colorize_files(colorizer, stills, FLAGS.output,
                             file_format=FLAGS.format,
                             jpeg_quality=FLAGS.jpeg_quality,
                             progress=bool(stills), overwrite=FLAGS.overwrite)
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
      if not FLAGS.overwrite and os.path.lexists(target):
        summary["skipped"].append(str(target))
        continue
      try:
        done = video.colorize_video(
            colorizer, clip, target,
            temporal_smoothing=FLAGS.temporal_smoothing,
            cut_threshold=FLAGS.cut_threshold)
      except video.VideoError as e:
        summary["failed"][clip] = str(e)
        continue
      summary["written"].append(str(target))
      print(f"{target}: {done['frames']} frames, {done['cuts']} cut(s), "
            f"{done['fps']:g} fps, {done['size'][0]}x{done['size'][1]}"
            + (f"; the decoder stopped early: {done['decode_error']}"
               if done["decode_error"] else ""), file=sys.stderr)
  except (OSError, ValueError) as e:  # ConfigError, OutputError, a full disk.
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(2)
  for file, reason in summary["failed"].items():
    print(f"Skipped {file}: {reason}", file=sys.stderr)
  if summary["skipped"]:
    print(f"Skipped {len(summary['skipped'])} file(s) whose output exists "
          "(use --overwrite).", file=sys.stderr)
  if summary["written"]:
    print(f"Colorized {len(summary['written'])} file(s) into {FLAGS.output} "
          f"with output {colorizer.output!r} of step {colorizer.step} on "
          f"{len(colorizer.devices)} {colorizer.devices[0].platform.upper()} "
          f"device(s).")
  else:
    print(f"Nothing was written to {FLAGS.output}: no file was colorized.")
  if summary["failed"]:
    sys.exit(1)


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
  flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default: newest.")
  flags.DEFINE_string("output", None, "Folder for the colorized images; not "
                      "an input folder nor inside one.")
  flags.DEFINE_bool("overwrite", False, "Replace output files that exist; "
                    "by default they are kept and their inputs skipped.")
  flags.DEFINE_enum("format", "png", list(FORMATS), "Output file format.")
  flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality (--format=jpeg).")
  flags.DEFINE_integer("batch_size", 8, "Images per network call.")
  flags.DEFINE_string("network_output", None,
                      "Which of the run's outputs colors the photos, e.g. "
                      "'generator' (raw weights) beside 'generator_ema'; "
                      "default: the system's final output.")
  flags.mark_flags_as_required(["output"])


if __name__ == "__main__":
  cli.run("colorize", sys.modules[__name__])
