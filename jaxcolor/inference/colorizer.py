"""The colorizer: a trained run or a model artifact, colorizing whole photos.

  from jaxcolor import colorize      # the command's module re-exports it
  colorizer = colorize.Colorizer.from_workdir("runs/default")
  colorizer = colorize.Colorizer.from_pretrained("https://.../model.tar.gz")
  rgb = colorizer.colorize(gray)        # [H, W] or [H, W, 3] -> uint8 [H, W, 3]

The network runs on the photo's lightness at the training size (squeezed to
its square) or, with `render_size`, with the shorter side at that size and
the aspect kept; its a*b* are joined to the photo's full-resolution L*
(jaxcolor/inference/rendering.py). A color photo is reduced to its L* first,
so it can be used to check the model against the original.

A run is rebuilt from WORKDIR/config.json (jaxcolor/inference/run_loading.py)
and only the arrays its colorizing output reads are kept (`Colorizer.arrays`:
no optimizer state, no discriminator): exactly what `python -m
jaxcolor.export` writes into an artifact (jaxcolor/inference/artifact.py).
Each batch is split over every local accelerator (`default_devices`); on a
CPU, one device.
"""

import copy
import os
from typing import Any, Sequence

import jax
import jax.extend as jex
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from jaxcolor import backends
from jaxcolor import systems
from jaxcolor.core import color_space
from jaxcolor.core.errors import JobError
from jaxcolor.inference import artifact
from jaxcolor.inference import guided_upsampling
from jaxcolor.inference import rendering
from jaxcolor.inference import run_loading
from jaxcolor.training import checkpointing
from jaxcolor.training import experiment
from jaxcolor.training import rundir


class ColorizerError(JobError, ValueError):
  """A choice the colorizer cannot take (an output the run does not have, a
  render size below the network's size multiple); the message names it."""


def default_devices() -> list[jax.Device]:
  """The devices a colorizer splits its batch over by default: every local
  accelerator; on the CPU one device (simulated CPU devices share the host's
  cores, so splitting there only adds work)."""
  devices = jax.local_devices()
  return devices if devices[0].platform != "cpu" else devices[:1]


class Colorizer:
  """A trained system that colorizes whole images (see module docstring)."""
  # How the a*b* reach the photo's size (`with_upsample`).
  upsample = "bilinear"

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
      raise ColorizerError(f"output={output!r}: this run's outputs are "
                       f"{', '.join(names)}.")
    self.output = output or names[0]
    self.needed = _read_paths(
        lambda s, x: system.colorize(s, x)[self.output], abstract, square,
        self._paths)

    def predict_ab(arrays, rgb):
      leaves = [arrays[p] if p in arrays else jnp.zeros(a.shape, a.dtype)
                for p, a in zip(self._paths, self._abstract)]
      state = jax.tree.unflatten(self._treedef, leaves)
      lightness, _ = color_space.split_lab(rgb)
      ab = system.colorize(state, lightness)[self.output]
      return color_space.net_to_ab(ab.astype(jnp.float32))

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
      raise ColorizerError(
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
    temperature = run_dir.read_temperature()
    if temperature is not None and "ab_bins" in config.generator and (
        config.generator.ab_bins):
      # Chosen on the run's held-out split (jaxcolor/evaluation/temperature.py).
      config.generator.bins_temperature = temperature
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
      built = run_loading.build_run(config, run_dir.config_path)
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
    archive, or a file:// or https:// URL (see jaxcolor/inference/artifact.py).

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
      run_loading.check_artifact_config(config, meta_path)
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
    colorizer.arrays = colorizer._place(run_loading.artifact_arrays(
        arrays, dict(zip(colorizer._paths, colorizer._abstract)),
        colorizer.needed, directory / artifact.VARIABLES, meta["output"]))
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
    `devices` (a TPU topology's: jaxcolor/benchmarking/compile_only.py) without placing
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

  def with_upsample(self, upsample: str) -> "Colorizer":
    """The same colorizer (sharing its arrays) bringing the a*b* to the
    photo's size by `upsample`: 'bilinear' or 'guided' (along the photo's
    L*: jaxcolor/inference/guided_upsampling.py).

    Raises:
      ColorizerError: another mode.
    """
    if upsample not in guided_upsampling.MODES:
      raise ColorizerError(f"upsample={upsample!r} is invalid: one of "
                           f"{', '.join(guided_upsampling.MODES)}.")
    other = copy.copy(self)
    other.upsample = upsample
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
    prepared = [rendering.as_image(image) for image in images]
    return [self.recombine(image, ab)
            for image, ab in zip(prepared, self.predict_ab(prepared))]

  def recombine(self, image: Image.Image, ab: np.ndarray) -> np.ndarray:
    """The photo's L* with the network's a*b* [h, w, 2] brought to its size
    (`upsample`) -> uint8 RGB [H, W, 3]."""
    return rendering.recombine(image, ab, self.upsample)

  def lowered(self, batch: np.ndarray) -> jax.stages.Lowered:
    """The network program for `batch`'s shape, lowered (for its cost)."""
    return self._predict_ab.lower(self.arrays, batch)

  def network_ab(self, batch: np.ndarray) -> np.ndarray:
    """The network alone: uint8 RGB [B, h, w, 3] (only its L* is read) at the
    network's input size -> a*b* [B, h, w, 2] float32, on the host."""
    return np.asarray(self._predict_ab(self.arrays, batch))

  def predict_ab(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
    """The network's a*b* of each Pillow image (`rendering.as_image`), at the
    network's resolution: [h, w, 2] float32 in Lab units, before the
    upsampling to the photo's size (video smooths them over time here)."""
    prepared = images
    inputs = []
    for image in prepared:
      if self.render_size is None:
        size = self.image_size
        inputs.append((rendering.squeezed(image, size), (size, size)))
      else:
        inputs.append(rendering.rendered(image, self.render_size,
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


