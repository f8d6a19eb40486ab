"""The colorizer as one program: uint8 RGB [batch, H, W, 3] in, uint8 RGB of
the same shape out, for serving without this codebase.

Inside the program, as `Colorizer.colorize_batch` does on the host: each
photo squeezed to the training size's square (bicubic, antialiased), its L*
through the network, the a*b* resized to the photo's size (bilinear, or
with `--upsample guided` along the photo's own L*:
jaxcolor/inference/guided_upsampling.py) and joined to the photo's
full-resolution L*, back to sRGB, rounded to uint8.
Batch, height and width are symbolic: one program for every photo size.
The host path resizes with Pillow and this one with `jax.image.resize`, so
the two agree to rounding (tests/test_export.py measures it).

Two forms (`python -m jaxcolor.export ... --stablehlo --saved_model`):
  serving/colorize.stablehlo   `jax.export` serialization (StableHLO with
                               the weights inside): `jax.export.deserialize(
                               data).call(rgb)` in any JAX process.
  serving/saved_model/         a TensorFlow SavedModel (jax2tf, the same
                               StableHLO in an XlaCallModule op, the weights
                               as variables): `tf.saved_model.load(path)
                               .serve(rgb)`, or TF Serving's 'serving_default'.

Both are lowered with source locations cut to file names (`_file_names_only`):
JAX records each operation's Python frames in the StableHLO as debug
locations, and an artifact must not carry the exporting machine's paths.

TensorFlow, for the SavedModel form alone, is the `saved_model` extra
(`pip install 'jaxcolor[saved_model]'`, docs/install.md): 1.3 GB that
nothing else needs. `require_tensorflow` says so before an export starts.
"""

import contextlib
import importlib.util
import pathlib
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxcolor.core import color_space
from jaxcolor.core.errors import ConfigError
from jaxcolor.inference import guided_upsampling

STABLEHLO = "serving/colorize.stablehlo"
SAVED_MODEL = "serving/saved_model"


class MissingTensorFlowError(ConfigError):
  """The SavedModel form was asked for where TensorFlow is not installed."""


def require_tensorflow() -> None:
  """Raises MissingTensorFlowError unless TensorFlow is installed.

  Found, not imported (an import takes seconds), so that an export asked
  for a SavedModel fails at once, before it reads a checkpoint.
  """
  if importlib.util.find_spec("tensorflow") is None:
    raise MissingTensorFlowError(
        "the SavedModel form needs TensorFlow: "
        "pip install 'jaxcolor[saved_model]'")


def program(colorizer) -> Callable[[dict, jax.Array], jax.Array]:
  """(arrays, uint8 RGB [B, H, W, 3]) -> uint8 RGB [B, H, W, 3], with
  `colorizer.arrays` as the first argument; the a*b* reach the photo's size
  as `colorizer.upsample` says."""
  size = colorizer.image_size
  guided = colorizer.upsample == "guided"
  predict_ab = colorizer.network_fn  # Traced into the program, not jitted.

  def colorize(arrays: dict, rgb: jax.Array) -> jax.Array:
    batch, height, width, _ = rgb.shape
    small = jax.image.resize(rgb.astype(jnp.float32), (batch, size, size, 3),
                             "cubic", antialias=True)
    small = jnp.clip(jnp.round(small), 0, 255).astype(jnp.uint8)
    ab = predict_ab(arrays, small)
    lightness = color_space.rgb_to_lab(rgb)[..., :1]
    if guided:
      lightness_small = jax.image.resize(lightness[..., 0], ab.shape[:3],
                                         "linear", antialias=True)
      ab = guided_upsampling.weighted_samples(jnp, lightness[..., 0],
                                              lightness_small, ab)
    else:
      ab = jax.image.resize(ab, (batch, height, width, 2), "linear",
                            antialias=True)
    out = color_space.lab_to_rgb(jnp.concatenate([lightness, ab], axis=-1))
    return jnp.round(jnp.clip(out, 0.0, 1.0) * 255.0).astype(jnp.uint8)

  return colorize


# Everything up to the last separator of a source path: the directories.
_DIRECTORIES = r".*[/\\]"


@contextlib.contextmanager
def _file_names_only() -> Iterator[None]:
  """Lowering inside records 'rgb_program.py:47', not '/home/.../rgb_program.py:47'.

  JAX's locations hold the file of every Python frame that traced an
  operation (this package's, Flax's, the caller's script), absolute paths
  of the exporting machine. `jax.export` offers no option to drop them; the
  canonicalization regex applies wherever JAX writes a location, and is part
  of the trace context, so nothing lowered before is reused. The file name
  and line stay, so that an error in a serving process still points at a
  source line.
  """
  name = "jax_hlo_source_file_canonicalization_regex"
  previous = getattr(jax.config, name)
  jax.config.update(name, _DIRECTORIES)
  try:
    yield
  finally:
    jax.config.update(name, previous)


def export_stablehlo(colorizer, path: pathlib.Path) -> None:
  """The program with the weights inside, serialized by `jax.export`."""
  arrays = colorizer.arrays
  colorize = program(colorizer)
  batch, height, width = jax.export.symbolic_shape("b, h, w")
  with _file_names_only():
    exported = jax.export.export(jax.jit(lambda rgb: colorize(arrays, rgb)))(
        jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8))
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(exported.serialize())


def export_saved_model(colorizer, path: pathlib.Path) -> None:
  """A TensorFlow SavedModel whose `serve` signature is the program."""
  require_tensorflow()
  import tensorflow as tf  # noqa: PLC0415 (TensorFlow only for this format)
  from jax.experimental import jax2tf  # noqa: PLC0415

  names = sorted(colorizer.arrays)
  colorize = program(colorizer)
  module = tf.Module()
  # A list, not a dict keyed by 'a/b/c' paths: object-graph names stay plain.
  module.weights = [tf.Variable(np.asarray(colorizer.arrays[n]),
                                trainable=False) for n in names]
  converted = jax2tf.convert(
      lambda weights, rgb: colorize(dict(zip(names, weights)), rgb),
      polymorphic_shapes=[None, "(b, h, w, 3)"], with_gradient=False)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.uint8, name="rgb")])
  def serve(rgb):
    return converted(module.weights, rgb)

  module.serve = serve
  # jax2tf lowers the program when `serve` is traced, during the save.
  with _file_names_only():
    tf.saved_model.save(module, str(path),
                        signatures={"serving_default": serve})


def run_stablehlo(data: bytes, rgb: np.ndarray) -> np.ndarray:
  """Runs a serialized program on uint8 RGB [B, H, W, 3] (what a serving
  process needs: JAX, and not this package)."""
  return np.asarray(jax.export.deserialize(data).call(rgb))


def files_under(root: pathlib.Path, directory: pathlib.Path) -> dict[str, Any]:
  """{path relative to `root`: path} of every file under `directory`."""
  return {str(p.relative_to(root)): p for p in sorted(directory.rglob("*"))
          if p.is_file()}
