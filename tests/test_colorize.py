"""Colorizing files and arrays of any size and format with a run's checkpoint."""

import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor

import helpers
from jaxcolor.core import color_space
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.inference import photo_paths
from jaxcolor.inference import rendering


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  run = tmp_path_factory.mktemp("colorize") / "run"
  helpers.make_checkpoint(helpers.load_config("configs/pix2pix.py"), run,
                          steps=(3, 6))
  return run


@pytest.fixture(scope="module")
def colorizer(run_dir):
  return colorizer_lib.Colorizer.from_workdir(run_dir, batch_size=4)


def _photo(width: int = 72, height: int = 48) -> Image.Image:
  path = helpers.REPO / "jaxcolor" / "sample_data" / "eval" / "bsds_test_140006.jpg"
  return Image.open(path).convert("RGB").resize((width, height))


def _write_inputs(root) -> dict[str, tuple[int, int]]:
  """Mixed formats; returns {output name: expected (width, height)}."""
  photo = _photo()
  (root / "album" / "deeper").mkdir(parents=True)
  photo.save(root / "color.jpg", quality=95)
  photo.convert("L").save(root / "album" / "gray.png")
  photo.convert("RGBA").resize((37, 23)).save(root / "album" / "rgba.png")
  photo.convert("P").save(root / "album" / "deeper" / "palette.png")
  photo.convert("CMYK").save(root / "album" / "cmyk.jpg")
  sixteen = np.asarray(photo.convert("L")).astype(np.uint16) * 257
  Image.fromarray(sixteen).save(root / "album" / "gray16.png")
  assert Image.open(root / "album" / "gray16.png").mode.startswith("I;16")
  rotated = photo.resize((30, 20))
  exif = rotated.getexif()
  exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
  rotated.save(root / "album" / "rotated.jpg", exif=exif)
  photo.save(root / "album" / "color.png")  # Same stem as lab.jpg.
  (root / "album" / "notes.txt").write_text("not an image")
  return {"color_jpg": (72, 48), "color_png": (72, 48), "gray": (72, 48),
          "rgba": (37, 23), "deeper/palette": (72, 48), "cmyk": (72, 48),
          "gray16": (72, 48), "rotated": (20, 30)}


def test_mixed_formats_keep_their_size_and_name(colorizer, tmp_path):
  expected = _write_inputs(tmp_path / "in")
  (tmp_path / "in" / "album" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
  summary = photo_paths.colorize_files(
      colorizer, [str(tmp_path / "in" / "color.jpg"), str(tmp_path / "in" / "album")],
      str(tmp_path / "out"), progress=False)
  assert list(summary["failed"]) == [str(tmp_path / "in" / "album" / "broken.jpg")]
  written = sorted(p.relative_to(tmp_path / "out").with_suffix("").as_posix()
                   for p in (tmp_path / "out").rglob("*.png"))
  assert written == sorted(expected)
  for name, size in expected.items():
    image = Image.open(tmp_path / "out" / f"{name}.png")
    assert image.mode == "RGB" and image.size == size, name


def test_pipelined_files_equal_one_at_a_time(colorizer, tmp_path):
  """Decode, network and write overlap across batches; the files are those
  `colorize_batch` gives photo by photo, and a last batch of only broken
  files still lets the batches before it be written."""
  (tmp_path / "in").mkdir()
  photos = {}
  for i, size in enumerate([(72, 48), (40, 40), (48, 72), (64, 32), (30, 50)]):
    photos[f"p{i}"] = _photo().resize(size)
    photos[f"p{i}"].save(tmp_path / "in" / f"p{i}.png")
  for name in ("z1", "z2"):
    (tmp_path / "in" / f"{name}.jpg").write_bytes(b"\xff\xd8 truncated")
  saved = colorizer.batch_size
  colorizer.batch_size = 2
  try:
    summary = photo_paths.colorize_files(colorizer, [str(tmp_path / "in")],
                                      str(tmp_path / "out"), progress=False,
                                      threads=3)
  finally:
    colorizer.batch_size = saved
  assert sorted(summary["failed"]) == [str(tmp_path / "in" / "z1.jpg"),
                                       str(tmp_path / "in" / "z2.jpg")]
  assert sorted(pathlib.Path(p).stem for p in summary["written"]) == sorted(photos)
  assert set(summary["seconds"]) == {"decode", "network", "write"}
  for name, photo in photos.items():
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out" / f"{name}.png")),
        colorizer.colorize(photo), err_msg=name)


def test_lightness_is_the_inputs_at_full_resolution(colorizer):
  photo = np.asarray(_photo(203, 131))  # Not the model's 32 x 32, not square.
  out = colorizer.colorize(photo)
  assert out.shape == photo.shape and out.dtype == np.uint8
  lightness_in = skcolor.rgb2lab(photo / 255.0)[..., 0]
  lightness_out = skcolor.rgb2lab(out / 255.0)[..., 0]
  # 8-bit rounding of the output moves L* by well under one unit.
  assert np.abs(lightness_out - lightness_in).mean() < 0.5
  assert np.abs(lightness_out - lightness_in).max() < 3.0


def test_predicted_ab_is_upsampled_and_joined_to_full_resolution_lightness():
  photo = _photo(90, 61)
  ab = np.zeros((32, 32, 2), np.float32)
  ab[..., 0], ab[..., 1] = 12.0, -8.0        # A uniform cast.
  ab[:, 16:, 0] = -12.0                      # The right half another.
  rgb = rendering.recombine(photo, ab)
  assert rgb.shape == (61, 90, 3)
  lab_in = skcolor.rgb2lab(np.asarray(photo) / 255.0)
  lab = skcolor.rgb2lab(rgb / 255.0)
  in_gamut = (lab_in[..., 0] > 15) & (lab_in[..., 0] < 85)
  left, right = in_gamut.copy(), in_gamut.copy()
  left[:, 40:], right[:, :50] = False, False
  np.testing.assert_allclose(np.median(lab[left][:, 1:], axis=0), [12, -8], atol=1.5)
  np.testing.assert_allclose(np.median(lab[right][:, 1:], axis=0), [-12, -8], atol=1.5)
  np.testing.assert_allclose(lab[in_gamut][:, 0], lab_in[in_gamut][:, 0], atol=1.0)


@pytest.mark.parametrize("count", [1, 5000, 16384, 98304, 98305, 1500000])
def test_chunks_cover_every_pixel_once_with_little_padding(count):
  pieces = rendering._chunks(count)
  starts = [start for start, _ in pieces]
  assert starts[0] == 0
  for (start, size), following in zip(pieces, starts[1:] + [None]):
    assert size & (size - 1) == 0            # Powers of two: few shapes.
    assert rendering._MIN_CHUNK <= size <= rendering._CHUNK_PIXELS
    assert following is None or following == start + size
  end = pieces[-1][0] + pieces[-1][1]
  assert count <= end < count + rendering._MIN_CHUNK


def test_join_lightness_over_several_chunks_equals_one_program(monkeypatch):
  # Small chunks, so that a 100 x 70 photo takes three calls and padding.
  monkeypatch.setattr(rendering, "_MIN_CHUNK", 1024)
  monkeypatch.setattr(rendering, "_CHUNK_PIXELS", 4096)
  photo = _photo(100, 70)
  ab = np.random.default_rng(1).uniform(-60, 60, (70, 100, 2)).astype(np.float32)
  assert len(rendering._chunks(7000)) == 3
  whole = np.asarray(jax.jit(color_space.with_ab)(np.asarray(photo), ab))
  np.testing.assert_array_equal(rendering.join_lightness(photo, ab), whole)


def test_arrays_of_every_kind_and_color_reduced_to_lightness(colorizer):
  photo = np.asarray(_photo(64, 40))
  lab = skcolor.rgb2lab(photo / 255.0)
  lab[..., 1:] = 0
  gray_rgb = np.round(skcolor.lab2rgb(lab) * 255).astype(np.uint8)
  gray = gray_rgb[..., 0]
  rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], -1)
  outputs = colorizer.colorize_batch([
      photo, gray, gray[..., None], gray.astype(np.uint16) * 257,
      gray / 255.0, gray_rgb, rgba, Image.fromarray(photo)])
  assert all(o.shape == (40, 64, 3) and o.dtype == np.uint8 for o in outputs)
  from_color, from_gray = outputs[0].astype(int), outputs[1].astype(int)
  # A color photo is colorized from its L* alone: as its gray version.
  assert np.abs(from_color - from_gray).mean() < 1.5
  for other in outputs[2:5]:  # The same gray as [H, W, 1], uint16, float.
    np.testing.assert_array_equal(other, outputs[1])
  # Its RGB version: channels equal up to the rounding of lab2rgb.
  assert np.abs(outputs[5].astype(int) - from_gray).max() <= 2
  np.testing.assert_array_equal(outputs[6], outputs[0])
  np.testing.assert_array_equal(outputs[7], outputs[0])
  with pytest.raises(ValueError, match="shape"):
    colorizer.colorize(np.zeros((4, 4, 2), np.uint8))


def test_command_line_jpeg_output_and_checkpoint_choice(run_dir, tmp_path):
  _photo().save(tmp_path / "photo.png")
  (tmp_path / "broken.png").write_bytes(b"\x89PNG nothing")
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.colorize", "--workdir", str(run_dir),
       "--checkpoint", "3", "--output", str(tmp_path / "out"), "--format",
       "jpeg", str(tmp_path / "photo.png"), str(tmp_path / "broken.png")],
      capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert result.returncode == 1, result.stderr[-3000:]  # One input failed.
  assert "broken.png" in result.stderr and "Traceback" not in result.stderr
  assert "step 3" in result.stdout
  out = Image.open(tmp_path / "out" / "photo.jpg")
  assert out.format == "JPEG" and out.size == (72, 48)
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.colorize", "--workdir", str(run_dir),
       "--checkpoint", "4", "--output", str(tmp_path / "out"),
       str(tmp_path / "photo.png")],
      capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert result.returncode == 2 and "saved steps: 3, 6" in result.stderr


def test_default_output_is_the_systems_final_one(tmp_path):
  config = helpers.load_config("configs/default.py")  # Keeps a generator EMA.
  assert config.generator_ema_decay > 0
  helpers.make_checkpoint(config, tmp_path / "run", steps=(1,))
  colorizer = colorizer_lib.Colorizer.from_workdir(tmp_path / "run", batch_size=2)
  assert colorizer.output == "generator_ema"


def test_output_is_chosen_by_name(run_dir):
  raw = colorizer_lib.Colorizer.from_workdir(run_dir, batch_size=4,
                                        output="generator")
  assert raw.output == "generator"
  with pytest.raises(ValueError, match="outputs are generator"):
    colorizer_lib.Colorizer.from_workdir(run_dir, batch_size=4, output="improver")


def test_a_batch_split_over_devices_gives_the_same_photos(run_dir):
  """`devices`: the batch is split over them (rounded up to a multiple of
  their number) and the colors are those of one device."""
  one = colorizer_lib.Colorizer.from_workdir(run_dir, batch_size=3)
  assert one.devices == jax.local_devices()[:1] and one.batch_size == 3
  many = colorizer_lib.Colorizer.from_workdir(run_dir, batch_size=3,
                                         devices=jax.local_devices()[:4])
  assert many.batch_size == 4
  photos = [_photo().resize(size) for size in [(72, 48), (40, 40), (33, 50),
                                               (64, 32), (48, 48)]]
  for a, b in zip(one.colorize_batch(photos), many.colorize_batch(photos)):
    np.testing.assert_allclose(a.astype(int), b.astype(int), atol=1)
