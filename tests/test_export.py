"""Model artifacts: export, load from a directory, an archive or a URL (a
server on 127.0.0.1), serving programs in fresh processes, render sizes, and
every bad input named in one line with nothing half-written."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import helpers
from jaxcolor.inference import artifact
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.inference import exporting as export_lib
from jaxcolor.inference import rgb_program

SAMPLE = helpers.REPO / "jaxcolor" / "sample_data" / "eval"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A pix2pix smoke run with a generator EMA, checkpoints at steps 3 and 6."""
  run = tmp_path_factory.mktemp("export") / "run"
  config = helpers.load_config("configs/default.py")
  assert config.generator_ema_decay > 0
  helpers.make_checkpoint(config, run, steps=(3, 6))
  return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("models") / "default"
  result = export_lib.export(run_dir, out, stablehlo=True, saved_model=True,
                             archive=True)
  return out, result


def _photos(count=3):
  paths = sorted(SAMPLE.glob("*.jpg"))[:count]
  return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def test_artifact_holds_the_ema_generator_only_and_colors_as_the_run(
    run_dir, exported):
  out, result = exported
  meta = json.loads((out / "model.json").read_text())
  assert meta["output"] == "generator_ema" and meta["step"] == 6
  assert meta["networks"] == ["generator_ema"]
  assert meta["image_size"] == 32 and meta["config"]["system"] == "pix2pix"
  assert set(meta["files"]) >= {"variables.safetensors",
                                "serving/colorize.stablehlo",
                                "serving/saved_model/saved_model.pb"}
  _, arrays = artifact.read(out)
  assert arrays and all(k.startswith("generator_ema/") for k in arrays)
  checkpoint = sum(p.stat().st_size for p in
                   (run_dir / "checkpoints" / "6").rglob("*") if p.is_file())
  assert (out / "variables.safetensors").stat().st_size < checkpoint / 2

  from_run = colorizer_lib.Colorizer.from_workdir(run_dir)
  from_artifact = colorizer_lib.Colorizer.from_pretrained(out)
  assert from_run.output == from_artifact.output == "generator_ema"
  assert set(from_run.arrays) == set(arrays)
  for photo in _photos():
    np.testing.assert_array_equal(from_artifact.colorize(photo),
                                  from_run.colorize(photo))
  from_archive = colorizer_lib.Colorizer.from_pretrained(result["archive"])
  np.testing.assert_array_equal(from_archive.colorize(_photos(1)[0]),
                                from_run.colorize(_photos(1)[0]))


def test_bfloat16_weights_halve_the_artifact_and_load_exactly(
    run_dir, exported, tmp_path):
  out = tmp_path / "bf16"
  result = export_lib.export(run_dir, out, weights_dtype="bfloat16",
                             stablehlo=True)
  assert result["weights_dtype"] == "bfloat16"
  _, full = artifact.read(exported[0])
  _, half = artifact.read(out)
  assert set(half) == set(full)
  for path, value in half.items():
    if "/params/" in path:  # Rounded to nearest, not truncated.
      assert value.dtype.name == "bfloat16", path
      np.testing.assert_array_equal(value, full[path].astype(value.dtype))
    else:  # The normalisation statistics stay exact.
      assert value.dtype == np.float32, path
      np.testing.assert_array_equal(value, full[path])
  size = (out / "variables.safetensors").stat().st_size
  assert size < 0.6 * (exported[0] / "variables.safetensors").stat().st_size
  loaded = colorizer_lib.Colorizer.from_pretrained(out)
  assert all(a.dtype == np.float32 for a in loaded.arrays.values())
  photo = _photos(1)[0]
  reference = colorizer_lib.Colorizer.from_pretrained(exported[0])
  difference = np.abs(loaded.colorize(photo).astype(int)
                      - reference.colorize(photo).astype(int))
  assert difference.mean() < 1.0  # The rounding moves a level here and there.
  # The serving program holds the same rounded weights as the file.
  small = np.asarray(Image.fromarray(photo).resize((96, 64)))
  served = rgb_program.run_stablehlo(
      (out / rgb_program.STABLEHLO).read_bytes(), small[None])[0]
  assert np.abs(served.astype(int)
                - loaded.colorize(small).astype(int)).max() <= 1
  with pytest.raises(artifact.ArtifactError, match="'float16' is not one of"):
    export_lib.export(run_dir, tmp_path / "f16", weights_dtype="float16")
  assert not (tmp_path / "f16").exists()


@pytest.fixture
def server(exported):
  with helpers.serve_folder(exported[0].parent) as url:
    yield url


def test_download_resumes_checks_sha256_and_is_cached(exported, server,
                                                      tmp_path, monkeypatch):
  monkeypatch.setenv("JAXCOLOR_CACHE", str(tmp_path / "cache"))
  out, result = exported
  archive = pathlib.Path(result["archive"])
  digest = artifact.sha256_of(archive)
  url = f"{server}/{archive.name}"
  helpers.RangeFiles.requests = []
  helpers.RangeFiles.cut_after = 1000
  with pytest.raises(artifact.ArtifactError, match="rerun to resume"):
    artifact.fetch(url, sha256=digest, progress=False)
  local = artifact.fetch(f"{url}#sha256={digest}", progress=False)
  assert helpers.RangeFiles.requests == [(None, 200),
                                         ("bytes=1000-", 206)]
  assert (local / "model.json").is_file()
  assert artifact.fetch(url, sha256=digest, progress=False) == local
  assert len(helpers.RangeFiles.requests) == 2  # Cached: no third request.
  colorizer = colorizer_lib.Colorizer.from_pretrained(url)
  assert colorizer.output == "generator_ema"

  wrong = "0" * 64
  with pytest.raises(artifact.ArtifactError) as error:
    artifact.fetch(f"{server}/{archive.name}?again", sha256=wrong,
                   progress=False)
  assert wrong in str(error.value) and digest in str(error.value)


def test_bad_artifacts_are_named(exported, tmp_path, monkeypatch):
  monkeypatch.setenv("JAXCOLOR_CACHE", str(tmp_path / "cache"))
  out, _ = exported
  with pytest.raises(artifact.ArtifactError, match="not a jaxcolor model"):
    artifact.read(tmp_path)
  newer = tmp_path / "newer"
  newer.mkdir()
  meta = json.loads((out / "model.json").read_text())
  (newer / "model.json").write_text(json.dumps(
      {**meta, "format_version": artifact.FORMAT_VERSION + 1}))
  with pytest.raises(artifact.ArtifactError, match="upgrade jaxcolor"):
    artifact.read(newer)
  damaged = tmp_path / "damaged"
  shutil.copytree(out, damaged)
  with (damaged / "variables.safetensors").open("r+b") as f:
    f.seek(-4, 2)
    f.write(b"\0\0\0\0")
  with pytest.raises(artifact.ArtifactError,
                     match=r"variables.safetensors: sha256 .* but model.json"):
    artifact.read(damaged)
  truncated = tmp_path / "model.tar.gz"
  truncated.write_bytes(b"\x1f\x8b" + b"\0" * 100)
  with pytest.raises(artifact.ArtifactError, match="not a readable archive"):
    artifact.fetch(truncated)
  assert not any((tmp_path / "cache" / "models").glob("*/*"))
  with pytest.raises(artifact.ArtifactError, match="exists"):
    export_lib.export(out.parent, out)


def test_render_size_keeps_the_aspect_and_rejects_what_cannot_fit(run_dir):
  colorizer = colorizer_lib.Colorizer.from_workdir(run_dir, render_size=48)
  assert colorizer.multiple == 32  # The smoke U-Net's 5 halvings.
  photo = _photos(1)[0]
  rgb = colorizer.colorize(photo)
  assert rgb.shape == photo.shape
  with pytest.raises(ValueError, match="render_size=16: .*at least 32"):
    colorizer_lib.Colorizer.from_workdir(run_dir, render_size=16)


def test_iizuka_renders_its_local_path_at_any_aspect(tmp_path):
  run = tmp_path / "iizuka"
  helpers.make_checkpoint(helpers.load_config("configs/iizuka.py"), run,
                          steps=(1,))
  colorizer = colorizer_lib.Colorizer.from_workdir(run, render_size=40)
  assert colorizer.multiple == 8  # Three halvings; the global path resizes.
  photo = _photos(1)[0]
  assert colorizer.colorize(photo).shape == photo.shape


_SERVE = """
import json, sys
import numpy as np
from PIL import Image
path, kind, *photos = sys.argv[1:]
rgb = np.stack([np.asarray(Image.open(p).convert("RGB").resize((96, 64)))
                for p in photos])
if kind == "stablehlo":
    import jax
    with open(path + "/serving/colorize.stablehlo", "rb") as f:
        out = np.asarray(jax.export.deserialize(f.read()).call(rgb))
else:
    import tensorflow as tf
    model = tf.saved_model.load(path + "/serving/saved_model")
    out = model.signatures["serving_default"](rgb=tf.constant(rgb))
    out = next(iter(out.values())).numpy()
np.save(sys.stdout.buffer, out)
"""


@pytest.mark.parametrize("kind", ["stablehlo", "saved_model"])
def test_serving_program_in_a_fresh_process_matches_the_colorizer(
    exported, kind):
  out, _ = exported
  photos = sorted(SAMPLE.glob("*.jpg"))[:3]
  result = subprocess.run(
      [sys.executable, "-c", _SERVE, str(out), kind, *map(str, photos)],
      capture_output=True, timeout=300)
  assert result.returncode == 0, result.stderr.decode()[-3000:]
  import io  # noqa: PLC0415
  served = np.load(io.BytesIO(result.stdout))
  colorizer = colorizer_lib.Colorizer.from_pretrained(out)
  expected = np.stack([colorizer.colorize(np.asarray(
      Image.open(p).convert("RGB").resize((96, 64)))) for p in photos])
  assert served.shape == expected.shape and served.dtype == np.uint8
  # Pillow's resizes on the host, jax.image.resize in the program: the
  # same filters, rounded apart by at most one level.
  difference = np.abs(served.astype(int) - expected.astype(int))
  assert difference.max() <= 1, (difference.max(), difference.mean())


def test_guided_serving_program_follows_the_host_path(run_dir, tmp_path):
  out = tmp_path / "guided"
  result = export_lib.export(run_dir, out, stablehlo=True, upsample="guided")
  assert result["serving_upsample"] == "guided"
  data = (out / rgb_program.STABLEHLO).read_bytes()
  colorizer = colorizer_lib.Colorizer.from_pretrained(out)
  for photo in _photos(2):
    photo = np.asarray(Image.fromarray(photo).resize((96, 64)))
    served = rgb_program.run_stablehlo(data, photo[None])[0].astype(int)
    guided = colorizer.with_upsample("guided").colorize(photo).astype(int)
    bilinear = colorizer.colorize(photo).astype(int)
    # Pillow's and JAX's resizes of L* round apart, so a level or two here
    # and there; the guided host path, not the bilinear one.
    assert np.abs(served - guided).mean() < 0.5
    assert (np.abs(served - guided).mean()
            < 0.5 * np.abs(served - bilinear).mean())
  with pytest.raises(artifact.ArtifactError, match="'nearest' is not one of"):
    export_lib.export(run_dir, tmp_path / "x", upsample="nearest")


def test_command_line_export_and_colorize_by_model(run_dir, tmp_path):
  out = tmp_path / "model"
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.export", f"--workdir={run_dir}",
       f"--output={out}", "--checkpoint=3"], capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Exported output 'generator_ema' of step 3" in result.stdout
  again = subprocess.run(
      [sys.executable, "-m", "jaxcolor.export", f"--workdir={run_dir}",
       f"--output={out}"], capture_output=True, text=True, timeout=300)
  assert again.returncode == 2
  assert again.stderr.strip().splitlines()[-1].startswith("Error: ")
  assert str(out) in again.stderr
  colorized = tmp_path / "colorized"
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.colorize", f"--model={out}",
       f"--output={colorized}", "--render_size=64",
       str(sorted(SAMPLE.glob("*.jpg"))[0])],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(list(colorized.glob("*.png"))) == 1
