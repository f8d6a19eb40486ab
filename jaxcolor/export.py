"""Export a trained run as a model artifact, and optionally as serving programs.

  python -m jaxcolor.export --workdir runs/default --output models/default \\
      [--checkpoint 1500] [--network_output generator] [--stablehlo] \\
      [--saved_model] [--archive]

writes OUTPUT/ (jaxcolor/artifact.py): model.json and variables.safetensors,
the arrays the run's colorizing output reads (the EMA generator where the
run keeps one; no optimizer state, no discriminator), plus with --stablehlo
serving/colorize.stablehlo and with --saved_model serving/saved_model/
(jaxcolor/serving.py). --archive also writes OUTPUT.tar.gz, the form to hand
on or serve by URL. Load it with `Colorizer.from_pretrained(PATH_OR_URL)` or
`python -m jaxcolor.colorize --model PATH_OR_URL`. Nothing half-written is
left at OUTPUT: the directory is built aside and renamed. `jaxcolor export`
is the same command (jaxcolor/cli.py starts both and holds the `--help`
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
import sys
import tarfile
import tempfile
from typing import Any, Sequence

import jax
import numpy as np
from absl import flags

from jaxcolor import artifact
from jaxcolor import cli
from jaxcolor import colorize
from jaxcolor import rundir
from jaxcolor import serving


def export(workdir: str | os.PathLike, output: str | os.PathLike, *,
           checkpoint: int | None = None, network_output: str | None = None,
           stablehlo: bool = False, saved_model: bool = False,
           archive: bool = False) -> dict[str, Any]:
  """Writes the artifact of `workdir`'s checkpoint; returns model.json's
  record plus 'path' (and 'archive')."""
  if saved_model:
    serving.require_tensorflow()  # Before any work, not after the rest.
  output = pathlib.Path(output)
  if output.exists():
    raise artifact.ArtifactError(f"{output} exists; choose a new --output.")
  colorizer = colorize.Colorizer.from_workdir(workdir, checkpoint,
                                              output=network_output)
  run_dir = rundir.RunDir(workdir)
  config = colorizer.config
  meta = {
      "system": config.system,
      "output": colorizer.output,
      "networks": sorted({path.split("/")[0] for path in colorizer.arrays}),
      "image_size": config.image_size,
      "run": _run_name(workdir),
      "step": colorizer.step,
      "evaluation": _without_local_paths(_evaluation(run_dir, colorizer.step)),
      "config": _without_local_paths(config.to_dict()),
      "serving": [name for name, wanted in (
          (serving.STABLEHLO, stablehlo), (serving.SAVED_MODEL, saved_model))
          if wanted],
  }

  def extras(directory: pathlib.Path) -> None:
    if stablehlo:
      serving.export_stablehlo(colorizer, directory / serving.STABLEHLO)
    if saved_model:
      serving.export_saved_model(colorizer, directory / serving.SAVED_MODEL)

  arrays = {path: np.asarray(jax.device_get(value))
            for path, value in colorizer.arrays.items()}
  path = artifact.write(output, arrays, meta, extras)
  result = {**json_record(path), "path": str(path)}
  if archive:
    result["archive"] = str(_archive(path))
  return result


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


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    print(f"Error: {cli.program()} takes only flags, not "
          f"{' '.join(argv[1:])}.", file=sys.stderr)
    sys.exit(2)
  FLAGS = flags.FLAGS
  try:
    result = export(FLAGS.workdir, FLAGS.output, checkpoint=FLAGS.checkpoint,
                    network_output=FLAGS.network_output,
                    stablehlo=FLAGS.stablehlo, saved_model=FLAGS.saved_model,
                    archive=FLAGS.archive)
  except (FileNotFoundError, ValueError) as e:  # ArtifactError, ConfigError.
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(2)
  path = pathlib.Path(result["path"])
  checkpoint = rundir.RunDir(FLAGS.workdir).checkpoint_dir / str(result["step"])
  print(f"Exported output {result['output']!r} of step {result['step']} to "
        f"{path}: {_size(path) / 1e6:.1f} MB ({', '.join(result['files'])}); "
        f"the checkpoint is {_size(checkpoint) / 1e6:.1f} MB."
        + (f" Archive: {result['archive']}." if "archive" in result else ""))


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The training run's directory.")
  flags.DEFINE_string("output", None, "The artifact directory to create.")
  flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default: newest.")
  flags.DEFINE_string("network_output", None, "Which output to export; "
                      "default: the system's final one (the EMA generator "
                      "where the run keeps one).")
  flags.DEFINE_bool("stablehlo", False, "Also write the serving program as a "
                    "serialized jax.export (StableHLO).")
  flags.DEFINE_bool("saved_model", False, "Also write it as a TensorFlow "
                    "SavedModel (TF Serving).")
  flags.DEFINE_bool("archive", False, "Also write OUTPUT.tar.gz.")
  flags.mark_flags_as_required(["workdir", "output"])


if __name__ == "__main__":
  cli.run("export", sys.modules[__name__])
