"""Colorize never writes over its inputs; a damaged run is named in one line.

The output is checked before the model is read: a file, an input folder
(or a folder inside one), an output path that is an input file. Outputs that
exist already are kept unless `overwrite`. A run whose checkpoint files are
cut short or missing, or whose config.json is not JSON or lacks a section,
is one `Error: ...` line with exit 2, naming the step folder or the file.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import helpers
from jaxcolor.core.errors import ConfigError
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.inference import exporting
from jaxcolor.inference import photo_paths
from jaxcolor.training import checkpointing


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A real small run (one checkpoint, step 6); tests damage copies of it."""
  workdir = tmp_path_factory.mktemp("hostile") / "run"
  helpers.make_checkpoint(helpers.load_config("configs/default.py"), workdir,
                          steps=(6,))
  return workdir


@pytest.fixture(scope="module")
def colorizer(run):
  return colorizer_lib.Colorizer.from_workdir(run, batch_size=2)


def _copy(run, tmp_path) -> pathlib.Path:
  return pathlib.Path(shutil.copytree(run, tmp_path / "run"))


def _truncate_largest(workdir: pathlib.Path) -> pathlib.Path:
  """Cuts the largest file of checkpoint 6 to half (a copy that failed)."""
  largest = max((p for p in (workdir / "checkpoints" / "6").rglob("*")
                 if p.is_file()), key=lambda p: p.stat().st_size)
  data = largest.read_bytes()
  largest.write_bytes(data[:len(data) // 2])
  return largest


def _photos(folder: pathlib.Path) -> dict[pathlib.Path, tuple[bytes, int]]:
  """Two small photos (and a note) in `folder`; returns every file's bytes
  and mtime, to compare after a run."""
  folder.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", (40, 30), (90, 120, 30)).save(folder / "a.png")
  Image.new("L", (30, 40), 100).save(folder / "b.jpg")
  return _state(folder)


def _state(folder: pathlib.Path) -> dict[pathlib.Path, tuple[bytes, int]]:
  return {p: (p.read_bytes(), p.stat().st_mtime_ns)
          for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args, cwd) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "jaxcolor.colorize", *args],
                        capture_output=True, text=True, timeout=300, cwd=cwd)


# -- the output ----------------------------------------------------------------


def test_output_that_is_an_input_folder_or_inside_one_writes_nothing(
    colorizer, tmp_path):
  before = _photos(tmp_path / "in")
  (tmp_path / "in" / "sub").mkdir()
  (tmp_path / "link").symlink_to(tmp_path / "in")
  for output, relation in [(tmp_path / "in", "is the input folder"),
                           (tmp_path / "in" / "sub", "is inside the input"),
                           (tmp_path / "link", "is the input folder"),
                           (tmp_path / "in" / "new" / "out", "is inside")]:
    with pytest.raises(photo_paths.OutputError, match=relation):
      photo_paths.colorize_files(colorizer, [str(tmp_path / "in")], str(output),
                              progress=False)
  assert _state(tmp_path / "in") == before
  assert not (tmp_path / "in" / "new").exists()


def test_output_path_that_is_an_input_file_is_refused(tmp_path):
  """Photos given one by one into their own folder (photo.png -> photo.png),
  a video into its own folder (OUTPUT/<its name>), two videos of one name."""
  Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
  jobs = photo_paths.find_inputs([str(tmp_path / "photo.png")])
  planned = [(f, photo_paths.output_path(tmp_path, n, "png")) for f, n in jobs]
  with pytest.raises(photo_paths.OutputError,
                     match=r"would write .*photo\.png over the input"):
    photo_paths.check_output(str(tmp_path), [str(tmp_path / "photo.png")],
                          planned)
  # Another spelling of the same folder (a link) is the same file.
  (tmp_path / "alias").symlink_to(tmp_path)
  planned = [(f, photo_paths.output_path(tmp_path / "alias", n, "png"))
             for f, n in jobs]
  with pytest.raises(photo_paths.OutputError, match="over the input"):
    photo_paths.check_output(str(tmp_path / "alias"),
                          [str(tmp_path / "photo.png")], planned)
  clip = tmp_path / "film.mp4"
  with pytest.raises(photo_paths.OutputError, match="over the input"):
    photo_paths.check_output(str(tmp_path), [str(clip)],
                          [(clip, tmp_path / clip.name)])
  other = tmp_path / "b" / "film.mp4"
  with pytest.raises(photo_paths.OutputError, match="would both be written"):
    photo_paths.check_output(str(tmp_path / "out"), [str(clip), str(other)],
                          [(clip, tmp_path / "out" / "film.mp4"),
                           (other, tmp_path / "out" / "film.mp4")])
  # A still into its own folder under another name is fine.
  photo_paths.check_output(str(tmp_path), [str(tmp_path / "photo.png")],
                        [(tmp_path / "photo.png", tmp_path / "photo.jpg")])


def test_output_that_is_a_file_is_refused_before_the_model_is_read(
    run, tmp_path):
  """The command line: `--output` onto an existing file and a video into its
  own folder, with a run whose checkpoint is damaged: the output's error
  comes first (nothing was read), one line, exit 2, the files untouched."""
  workdir = _copy(run, tmp_path)
  _truncate_largest(workdir)
  (tmp_path / "clips").mkdir()
  (tmp_path / "clips" / "film.mp4").write_bytes(b"not really a film")
  before = _photos(tmp_path / "in") | _state(tmp_path / "clips")
  result = _cli("--workdir", str(workdir), "--output", "in/a.png", "in",
                cwd=tmp_path)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      "Error: --output in/a.png is a file; give a folder."]
  result = _cli("--workdir", str(workdir), "--output", "clips",
                "clips/film.mp4", cwd=tmp_path)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      "Error: --output clips would write clips/film.mp4 over the input "
      "clips/film.mp4; give another folder."]
  assert _state(tmp_path / "in") | _state(tmp_path / "clips") == before


def test_existing_outputs_are_kept_unless_overwrite(colorizer, tmp_path):
  _photos(tmp_path / "in")
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "a.png").write_bytes(b"someone else's file")
  kept = _state(tmp_path / "out")
  summary = photo_paths.colorize_files(colorizer, [str(tmp_path / "in")],
                                    str(tmp_path / "out"), progress=False,
                                    overwrite=False)
  assert summary["skipped"] == [str(tmp_path / "out" / "a.png")]
  assert summary["written"] == [str(tmp_path / "out" / "b.png")]
  assert _state(tmp_path / "out")[tmp_path / "out" / "a.png"] == kept[
      tmp_path / "out" / "a.png"]
  summary = photo_paths.colorize_files(colorizer, [str(tmp_path / "in")],
                                    str(tmp_path / "out"), progress=False,
                                    overwrite=True)
  assert sorted(summary["written"]) == [str(tmp_path / "out" / "a.png"),
                                        str(tmp_path / "out" / "b.png")]
  assert summary["skipped"] == []
  assert Image.open(tmp_path / "out" / "a.png").size == (40, 30)
  # No temporary file is left beside the outputs.
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
      "a.png", "b.png"]


def test_save_image_without_overwrite_keeps_a_file_that_appeared(tmp_path):
  """The check before decoding can be overtaken (another process writes
  the name meanwhile): the write itself does not replace it either."""
  target = tmp_path / "a.png"
  target.write_bytes(b"appeared meanwhile")
  rgb = np.zeros((4, 4, 3), np.uint8)
  with pytest.raises(FileExistsError):
    photo_paths.save_image(rgb, target, "png", overwrite=False)
  assert target.read_bytes() == b"appeared meanwhile"
  assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
  photo_paths.save_image(rgb, tmp_path / "new.png", "png", overwrite=False)
  assert Image.open(tmp_path / "new.png").size == (4, 4)
  # Permissions as `open` gives them (the umask's), not mkstemp's 0600.
  umask = os.umask(0)
  os.umask(umask)
  assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_skipped_inputs_are_named_in_words(colorizer, tmp_path):
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "notes.txt").write_text("not an image")
  (tmp_path / "in" / "empty.png").write_bytes(b"")
  (tmp_path / "in" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  summary = photo_paths.colorize_files(
      colorizer, [str(tmp_path / "in" / name)
                  for name in ("notes.txt", "empty.png", "cut.jpg")],
      str(tmp_path / "out"), progress=False)
  assert summary["failed"] == {
      str(tmp_path / "in" / "notes.txt"): "not an image Pillow can read",
      str(tmp_path / "in" / "empty.png"): "an empty file",
      str(tmp_path / "in" / "cut.jpg"): "a damaged or truncated image"}
  assert summary["written"] == [] and not (tmp_path / "out").exists()


def test_command_line_skips_existing_outputs_and_says_nothing_was_written(
    run, tmp_path):
  _photos(tmp_path / "in")
  (tmp_path / "in" / "notes.txt").write_text("not an image")
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "a.png").write_bytes(b"an earlier run's")
  before = _state(tmp_path / "in") | _state(tmp_path / "out")
  result = _cli("--workdir", str(run), "--output", "out", "in/a.png",
                "in/notes.txt", cwd=tmp_path)
  assert result.returncode == 1, result.stderr[-2000:]  # notes.txt failed.
  assert "Traceback" not in result.stderr
  assert "Skipped in/notes.txt: not an image Pillow can read" in result.stderr
  assert ("Skipped 1 file(s) whose output exists (use --overwrite)."
          in result.stderr)
  assert result.stdout.strip() == (
      "Nothing was written to out: no file was colorized.")
  assert _state(tmp_path / "in") | _state(tmp_path / "out") == before


# -- damaged runs --------------------------------------------------------------


def _remove(relative):
  def damage(workdir):
    (workdir / "checkpoints" / "6" / relative).unlink()
  return damage


@pytest.mark.parametrize("damage, reason", [
    (_truncate_largest, "OUT_OF_RANGE"),
    (_remove("state/manifest.ocdbt"), "NOT_FOUND"),
    (_remove("state/_METADATA"), "state/_METADATA is missing"),
], ids=["truncated", "manifest_removed", "metadata_removed"])
def test_damaged_checkpoint_is_named_in_one_line(run, tmp_path, damage,
                                                 reason):
  workdir = _copy(run, tmp_path)
  damage(workdir)
  with pytest.raises(checkpointing.DamagedCheckpointError) as error:
    colorizer_lib.Colorizer.from_workdir(workdir)
  message = str(error.value)
  assert message.startswith(
      f"checkpoint 6 is damaged ({workdir / 'checkpoints' / '6'}): ")
  assert reason in message and "\n" not in message
  assert "tensorstore_spec" not in message and "fit" not in message


def _without(*keys):
  def edit(text):
    config = json.loads(text)
    section = config
    for key in keys[:-1]:
      section = section[key]
    del section[keys[-1]]
    return json.dumps(config)
  return edit


def test_damaged_run_stops_export_and_the_command_line(run, tmp_path):
  """`export` shares the loading path; the command line prints the error as
  its only line on stderr (no Orbax log, no TensorStore report), exit 2."""
  workdir = _copy(run, tmp_path)
  _truncate_largest(workdir)
  with pytest.raises(checkpointing.DamagedCheckpointError):
    exporting.export(workdir, tmp_path / "artifact")
  assert not (tmp_path / "artifact").exists()
  Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
  result = _cli("--workdir", str(workdir), "--output", "out", "photo.png",
                cwd=tmp_path)
  assert result.returncode == 2
  lines = result.stderr.splitlines()
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith(
      f"Error: checkpoint 6 is damaged ({workdir / 'checkpoints' / '6'}): ")
  # A config.json without its generator section: one line naming the file.
  config = workdir / "config.json"
  config.write_text(_without("generator")(config.read_text()))
  result = _cli("--workdir", str(workdir), "--output", "out", "photo.png",
                cwd=tmp_path)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      f"Configuration error: {config}: missing 'generator'."]
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda text: text[:len(text) // 2],
     r"config\.json is not valid JSON: line \d+ column \d+"),
    (lambda text: "[1, 2]", r"config\.json is not a JSON object"),
    (_without("generator"), r"config\.json: missing 'generator'\.$"),
    (_without("image_size"), r"config\.json: missing 'image_size'\.$"),
    (_without("generator", "name"), r"config\.json: config\.generator\.name "
     "is missing"),
], ids=["cut", "not_an_object", "no_generator", "no_image_size",
        "no_generator_name"])
def test_damaged_config_names_the_file(run, tmp_path, edit, message):
  workdir = _copy(run, tmp_path)
  config = workdir / "config.json"
  config.write_text(edit(config.read_text()))
  with pytest.raises(ConfigError, match=message) as error:
    colorizer_lib.Colorizer.from_workdir(workdir)
  assert str(error.value).startswith(str(workdir / "config.json"))
  assert "\n" not in str(error.value)


def test_damaged_checkpoint_stops_an_evaluation_run(run, tmp_path, one_device):
  """`--mode=evaluate` restores through `experiment.restore`, which passes
  the error on as it is (the entry point prints a ConfigError as one line)."""
  from jaxcolor.evaluation import checkpoints  # noqa: PLC0415 (TensorBoard's writers)

  workdir = _copy(run, tmp_path)
  _truncate_largest(workdir)
  with pytest.raises(checkpointing.DamagedCheckpointError,
                     match=r"^checkpoint 6 is damaged \("):
    checkpoints.evaluate_checkpoints(
        helpers.load_config("configs/default.py"), str(workdir))
  assert not (workdir / "eval" / "6.json").exists()
