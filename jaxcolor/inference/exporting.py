"""Export a trained run as a model artifact, and optionally as serving programs.

  python -m jaxcolor.export --workdir runs/default --output models/default \\
      [--checkpoint 1500] [--network_output generator] [--stablehlo] \\
      [--saved_model] [--archive]

writes OUTPUT/ (jaxcolor/inference/artifact.py): model.json and variables.safetensors,
the arrays the run's colorizing output reads (the EMA generator where the
run keeps one; no optimizer state, no discriminator), plus with --stablehlo
serving/colorize.stablehlo and with --saved_model serving/saved_model/
(jaxcolor/inference/rgb_program.py). --archive also writes OUTPUT.tar.gz, the form to hand
on or serve by URL. Load it with `Colorizer.from_pretrained(PATH_OR_URL)` or
`python -m jaxcolor.colorize --model PATH_OR_URL`. Nothing half-written is
left at OUTPUT: the directory is built aside and renamed. `jaxcolor export`
is the same command (jaxcolor/runtime/job.py starts both and holds the `--help`
text).

An artifact is made to be handed on, so it carries nothing of the exporting
machine: model.json records the run's name and step, not its path (the
evaluation's checkpoint path is dropped, and absolute paths in the config,
such as a `folder:` dataset or `data_dir`, keep only their last component);
directories are 0755 and files 0644; the archive's members belong to uid 0
with no user or group name.
"""

import os
import pathlib
import re
import tarfile
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcolor.inference import artifact
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.inference import guided_upsampling
from jaxcolor.inference import rgb_program
from jaxcolor.training import rundir


WEIGHTS_DTYPES = ("float32", "bfloat16")


def export(workdir: str | os.PathLike, output: str | os.PathLike, *,
           checkpoint: int | None = None, network_output: str | None = None,
           stablehlo: bool = False, saved_model: bool = False,
           archive: bool = False, weights_dtype: str = "float32",
           upsample: str = "bilinear") -> dict[str, Any]:
  """Writes the artifact of `workdir`'s checkpoint; returns model.json's
  record plus 'path' (and 'archive').

  `weights_dtype='bfloat16'` stores the trained parameters (the arrays under
  'params') rounded to bfloat16, half the bytes; the normalisation
  statistics stay float32. The loader widens them back to float32, which is
  exact, and the serving programs are built from the same rounded values, so
  every form of the artifact colors alike. `upsample` is how the serving
  programs bring the a*b* to the photo's size ('bilinear' or 'guided');
  the weights are the same either way.
  """
  if weights_dtype not in WEIGHTS_DTYPES:
    raise artifact.ArtifactError(f"weights dtype {weights_dtype!r} is not one "
                                 f"of {', '.join(WEIGHTS_DTYPES)}.")
  if upsample not in guided_upsampling.MODES:
    raise artifact.ArtifactError(f"upsample {upsample!r} is not one of "
                                 f"{', '.join(guided_upsampling.MODES)}.")
  if saved_model:
    rgb_program.require_tensorflow()  # Before any work, not after the rest.
  output = pathlib.Path(output)
  if output.exists():
    raise artifact.ArtifactError(f"{output} exists; choose a new --output.")
  colorizer = colorizer_lib.Colorizer.from_workdir(
      workdir, checkpoint, output=network_output).with_upsample(upsample)
  arrays = {path: np.asarray(jax.device_get(value))
            for path, value in colorizer.arrays.items()}
  if weights_dtype == "bfloat16":
    arrays = {path: (value.astype(jnp.bfloat16) if _is_parameter(path, value)
                     else value) for path, value in arrays.items()}
    # Where the run's arrays lie, the rounded ones go.
    colorizer.arrays = jax.device_put(
        {path: value.astype(np.float32) for path, value in arrays.items()},
        {path: value.sharding for path, value in colorizer.arrays.items()})
  run_dir = rundir.RunDir(workdir)
  config = colorizer.config
  meta = {
      "system": config.system,
      "output": colorizer.output,
      "networks": sorted({path.split("/")[0] for path in colorizer.arrays}),
      "image_size": config.image_size,
      "run": _run_name(workdir),
      "step": colorizer.step,
      "weights_dtype": weights_dtype,
      "evaluation": _without_local_paths(_evaluation(run_dir, colorizer.step)),
      "config": _without_local_paths(config.to_dict()),
      "serving": [name for name, wanted in (
          (rgb_program.STABLEHLO, stablehlo), (rgb_program.SAVED_MODEL, saved_model))
          if wanted],
      "serving_upsample": upsample,
  }

  def extras(directory: pathlib.Path) -> None:
    if stablehlo:
      rgb_program.export_stablehlo(colorizer, directory / rgb_program.STABLEHLO)
    if saved_model:
      rgb_program.export_saved_model(colorizer, directory / rgb_program.SAVED_MODEL)

  path = artifact.write(output, arrays, meta, extras)
  result = {**json_record(path), "path": str(path)}
  if archive:
    result["archive"] = str(_archive(path))
  return result


def _is_parameter(path: str, value: np.ndarray) -> bool:
  """A trained float32 weight ('generator_ema/params/.../kernel'), not a
  normalisation statistic."""
  return "/params/" in f"/{path}" and value.dtype == np.float32


def json_record(path: pathlib.Path) -> dict[str, Any]:
  meta, _ = artifact.read(path)
  return meta


def _run_name(workdir: str | os.PathLike) -> str:
  """The run's folder name ('default' for runs/default/), never its path."""
  name = pathlib.PurePosixPath(str(workdir).rstrip("/")).name
  return name if name not in ("", ".", "..") else (
      pathlib.Path(workdir).resolve().name)


def _evaluation(run_dir: rundir.RunDir, step: int) -> dict[str, Any] | None:
  """The step's evaluation without its 'checkpoint' (a local path)."""
  record = run_dir.read_eval(step)
  if record is None:
    return None
  return {k: v for k, v in record.items() if k != "checkpoint"}


# A local absolute path, alone or after a 'kind:' prefix ('folder:/data');
# URLs ('gs://...') are not local and stay.
_LOCAL_PATH = re.compile(r"(?P<prefix>[A-Za-z_]+:)?(?P<path>[/~].*)",
                         re.DOTALL)


def _without_local_paths(value: Any) -> Any:
  """`value` (JSON-like) with each absolute local path cut to its last
  component: the record keeps which file or folder, not where it lay."""
  if isinstance(value, dict):
    return {k: _without_local_paths(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_without_local_paths(v) for v in value]
  if isinstance(value, str) and "://" not in value:
    match = _LOCAL_PATH.fullmatch(value)
    if match:
      name = pathlib.PurePosixPath(match["path"].rstrip("/")).name
      return (match["prefix"] or "") + name
  return value


def _portable(info: tarfile.TarInfo) -> tarfile.TarInfo:
  """A member as anyone may extract it: no owner's ids or names."""
  info.uid = info.gid = 0
  info.uname = info.gname = ""
  info.mode = 0o755 if info.isdir() else 0o644
  return info


def _archive(directory: pathlib.Path) -> pathlib.Path:
  """DIR.tar.gz holding DIR/, written aside and renamed (0644)."""
  target = directory.with_name(directory.name + ".tar.gz")
  handle, temporary = tempfile.mkstemp(dir=directory.parent,
                                       prefix=f".{target.name}.")
  os.close(handle)
  try:
    with tarfile.open(temporary, "w:gz") as t:
      t.add(directory, arcname=directory.name, filter=_portable)
    os.chmod(temporary, 0o644)  # mkstemp's 0600 is for the writing only.
    os.replace(temporary, target)
  except BaseException:
    os.unlink(temporary)
    raise
  return target


def _size(path: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in pathlib.Path(str(path)).rglob("*")
             if p.is_file())


def run(workdir: str, output: str, *, checkpoint: int | None = None,
        network_output: str | None = None, stablehlo: bool = False,
        saved_model: bool = False, archive: bool = False,
        weights_dtype: str = "float32", upsample: str = "bilinear"
        ) -> dict[str, Any]:
  """The export job (`jaxcolor export`): `export`, then one line of what was
  written and its size against the checkpoint's."""
  result = export(workdir, output, checkpoint=checkpoint,
                  network_output=network_output, stablehlo=stablehlo,
                  saved_model=saved_model, archive=archive,
                  weights_dtype=weights_dtype, upsample=upsample)
  path = pathlib.Path(result["path"])
  step_dir = rundir.RunDir(workdir).checkpoint_dir / str(result["step"])
  print(f"Exported output {result['output']!r} of step {result['step']} to "
        f"{path}: {_size(path) / 1e6:.1f} MB ({', '.join(result['files'])}); "
        f"the checkpoint is {_size(step_dir) / 1e6:.1f} MB."
        + (f" Archive: {result['archive']}." if "archive" in result else ""))
  return result
