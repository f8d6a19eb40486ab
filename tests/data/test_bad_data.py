"""Bad data never stops a run: every kind of bad file is skipped or
converted, counted once, and reported in the log, metrics.jsonl and
eval/<step>.json; a split without a usable image is one clear error."""

import io
import json
import logging
import shutil
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxcolor import data
from jaxcolor.core import configuration
from jaxcolor.data import sources, transforms
from jaxcolor.training import experiment
from jaxcolor.training import loop

from helpers import load_config


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  im.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def _png(width: int, height: int, bit_depth: int, color_type: int,
         raw: bytes) -> bytes:
  """A PNG written by hand (Pillow writes neither 48/64-bit color nor a
  header that lies about the size)."""
  def chunk(kind, body):
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
  header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
          + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _png16(pixels: np.ndarray) -> bytes:
  """[H, W, C] uint8 -> 16-bit PNG (C = 3: RGB, C = 4: RGBA)."""
  height, width, channels = pixels.shape
  wide = pixels.astype(">u2") * 257
  raw = b"".join(b"\0" + row.tobytes() for row in wide)
  return _png(width, height, 16, {3: 2, 4: 6}[channels], raw)


def _bomb(side: int) -> bytes:
  """A header claiming side x side 1-bit pixels over a few bytes of data:
  refused from the header, never decoded."""
  return _png(side, side, 1, 0, b"\0" * 64)


def _photo() -> Image.Image:
  path = sorted((sources.sample_dir() / "train").glob("*.jpg"))[0]
  with Image.open(path) as im:
    return im.convert("RGB").resize((60, 48))  # Above the 32 px crop.


def _bad_files(photo: Image.Image) -> dict[str, tuple[bytes, tuple[str, ...]]]:
  """name -> (bytes, the kinds it counts under)."""
  jpeg = _encode(photo, "JPEG")
  pixels = np.asarray(photo)
  alpha = np.random.default_rng(0).integers(0, 256, pixels.shape[:2],
                                            dtype=np.uint8)
  gray = photo.convert("L")
  palette = photo.convert("P", palette=Image.Palette.ADAPTIVE)
  return {
      "truncated.jpg": (jpeg[:len(jpeg) // 2], ("corrupt",)),
      "zero_bytes.jpg": (b"", ("empty",)),
      "notes.jpg": (b"a text file, not a photo\n", ("not_an_image",)),
      "cmyk.jpg": (_encode(photo.convert("CMYK"), "JPEG"), ("converted_cmyk",)),
      "gray16.png": (_encode(Image.fromarray(
          np.asarray(gray).astype(np.uint16) * 257), "PNG"), ("grayscale",)),
      "rgb16.png": (_png16(pixels), ("converted_16bit",)),
      "rgba.png": (_encode(Image.fromarray(np.dstack([pixels, alpha])), "PNG"),
                   ("converted_alpha",)),
      "palette.png": (_encode(palette, "PNG"), ("converted_palette",)),
      "palette_transparent.png": (_encode(palette, "PNG", transparency=0),
                                  ("converted_palette", "converted_alpha")),
      "tiny.png": (_encode(photo.resize((10, 8)), "PNG"), ("upscaled",)),
      "bomb.png": (_bomb(30000), ("too_large",)),
      "strip.png": (_encode(photo.resize((2000, 10)), "PNG"),
                    ("extreme_aspect",)),
      "gray.jpg": (_encode(gray, "JPEG"), ("grayscale",)),
      "gray_as_rgb.png": (_encode(gray.convert("RGB"), "PNG"), ("grayscale",)),
  }


# -- each kind at the decode level ----------------------------------------------


@pytest.mark.parametrize("name", sorted(_bad_files(_photo())))
def test_each_kind_is_skipped_or_converted_as_counted(name):
  encoded, kinds = _bad_files(_photo())[name]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    record = transforms.DecodeAndResize(32).map({"encoded": encoded,
                                                 "key": name})
  assert record[transforms.EVENTS] == kinds
  skipped = kinds[0] in transforms.SKIP_KINDS
  assert ("image" in record) == (not skipped)
  if not skipped:
    image = record["image"]
    assert image.dtype == np.uint8 and image.ndim == 3
    assert min(image.shape[:2]) == 32 and image.shape[2] == 3
    assert not transforms.is_grayscale(image)


def test_16bit_and_transparent_sources_keep_their_colors():
  photo = _photo()
  pixels = np.asarray(photo).astype(int)
  image, events = transforms.decode(_png16(np.asarray(photo)))
  assert events == ["converted_16bit"] and image.mode == "RGB"
  np.testing.assert_array_equal(np.asarray(image), pixels)  # 16 -> 8 bits.
  opaque = np.dstack([np.asarray(photo), np.full(pixels.shape[:2], 255,
                                                 np.uint8)])
  image, events = transforms.decode(_png16(opaque))
  assert events == ["converted_16bit", "converted_alpha"]
  np.testing.assert_array_equal(np.asarray(image), pixels)
  # Transparent pixels have no color of their own: white, as a viewer shows.
  clear = opaque.copy()
  clear[..., 3] = 0
  image, _ = transforms.decode(_encode(Image.fromarray(clear), "PNG"))
  assert (np.asarray(image) == 255).all()


def test_pillow_bomb_warning_and_error_count_as_too_large():
  # 100 MP: Pillow warns (89 MP), jaxcolor refuses (64 MP).
  with pytest.warns(Image.DecompressionBombWarning):
    assert transforms.decode(_bomb(10000)) == (None, ["too_large"])
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # As under `python -W error`.
    assert transforms.decode(_bomb(10000)) == (None, ["too_large"])
  assert transforms.decode(_bomb(9000)) == (None, ["too_large"])  # Ours only.
  assert transforms.decode(_bomb(30000)) == (None, ["too_large"])  # Pillow's.


def test_skipped_files_are_named_up_to_a_limit(caplog):
  kind = "test_kind_for_the_limit"
  with caplog.at_level(logging.WARNING):
    for i in range(transforms.MAX_WARNINGS_PER_KIND + 5):
      transforms._warn_once(f"file{i}.jpg", kind)
      transforms._warn_once(f"file{i}.jpg", kind)  # Once per file.
  lines = [r.getMessage() for r in caplog.records if kind in r.getMessage()]
  assert len(lines) == transforms.MAX_WARNINGS_PER_KIND + 1
  assert "counted, not named" in lines[-1]


def test_count_scalars_and_log_line():
  counts = {**dict.fromkeys(data.pipeline.COUNT_KEYS, 0), "files_read": 40,
            "corrupt": 2, "grayscale": 1, "upscaled": 3}
  assert data.pipeline.count_scalars(counts) == {
      "data/files_read": 40, "data/skipped": 3, "data/skipped_corrupt": 2,
      "data/skipped_grayscale": 1, "data/upscaled": 3}
  assert data.pipeline.describe_counts(counts) == (
      "40 files read; 3 skipped (corrupt 2, grayscale 1); converted: "
      "upscaled 3")


# -- a training run on a folder of good and bad files ---------------------------


NUM_GOOD = 22  # With 6 usable bad files, more than the first run's 3 x 8.
EVAL_FILES = {"zero_bytes.jpg": ("empty",), "gray.jpg": ("grayscale",),
              "cmyk.jpg": ("converted_cmyk",)}


def _expected(kinds_per_file, num_good: int) -> dict[str, int]:
  expected = {"data/files_read": num_good + len(kinds_per_file),
              "data/skipped": 0}
  for kinds in kinds_per_file:
    for kind in kinds:
      if kind in transforms.SKIP_KINDS:
        expected["data/skipped"] += 1
        kind = f"skipped_{kind}"
      expected[f"data/{kind}"] = expected.get(f"data/{kind}", 0) + 1
  return expected


def _good_photos(count: int):
  """Sample photos that decode with no event (color, large enough)."""
  decode = transforms.DecodeAndResize(32)
  for path in sorted((sources.sample_dir() / "train").glob("*.jpg")):
    if not decode.map({"encoded": path.read_bytes(), "key": ""})[
        transforms.EVENTS]:
      yield path
      count -= 1
      if not count:
        return


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad_data")
  (root / "train").mkdir()
  (root / "eval").mkdir()
  photos = list(_good_photos(NUM_GOOD + 3))
  for photo in photos[:NUM_GOOD]:
    shutil.copy(photo, root / "train")
  for photo in photos[NUM_GOOD:]:
    shutil.copy(photo, root / "eval")
  bad = _bad_files(_photo())
  for name, (encoded, _) in bad.items():
    (root / "train" / name).write_bytes(encoded)
  for name in EVAL_FILES:
    (root / "eval" / name).write_bytes(bad[name][0])
  return root


def _metrics(workdir) -> list[dict]:
  return [json.loads(line) for line in
          (workdir / "metrics.jsonl").read_text().splitlines()]


def test_training_on_bad_files_counts_each_once_and_survives_resume(
    bad_folder, tmp_path, monkeypatch, caplog):
  seen = []

  def recording(*args, **kwargs):
    iterator = create(*args, **kwargs)

    class Recorder:  # The host batches, as they reach the device.
      def __next__(self):
        batch = next(iterator)
        seen.append(batch["image"])
        return batch

      def get_state(self):
        return iterator.get_state()

      def set_state(self, state):
        iterator.set_state(state)

    return Recorder()

  create = data.create_train_iterator
  monkeypatch.setattr(data, "create_train_iterator", recording)
  config = load_config("configs/pix2pix.py")
  config.dataset = f"folder:{bad_folder}"
  config.num_train_steps = 3  # 24 images: not yet the whole first epoch.
  workdir = tmp_path / "run"
  with warnings.catch_warnings(), caplog.at_level(logging.INFO):
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    loop.train_and_evaluate(config, str(workdir))
    config.num_train_steps = 6  # Resumes at step 3, ends in the 2nd epoch.
    last_eval = loop.train_and_evaluate(config, str(workdir))

  expected = _expected([kinds for _, kinds in _bad_files(_photo()).values()],
                       NUM_GOOD)
  logged = [{k: v for k, v in m.items() if k.startswith("data/")}
            for m in _metrics(workdir) if "data/files_read" in m]
  assert [m["step"] for m in _metrics(workdir) if "data/files_read" in m] == [
      2, 3, 4, 6]
  # Cumulative, restored on resume (files read before step 3 stay counted),
  # each file counted once although the run is in its second epoch.
  assert logged[-1] == expected
  assert logged[1]["data/files_read"] < expected["data/files_read"]
  for before, after in zip(logged, logged[1:]):
    assert all(after[k] >= v for k, v in before.items())
  # No grayscale image reached a batch (planted ones have equal channels).
  assert len(seen) >= 6
  for batch in seen:
    for image in batch:
      assert not (np.array_equal(image[..., 0], image[..., 1])
                  and np.array_equal(image[..., 1], image[..., 2]))
  eval_expected = _expected(EVAL_FILES.values(), 3)
  for step in (3, 6):
    report = json.loads((workdir / "eval" / f"{step}.json").read_text())
    assert {k: v for k, v in report.items()
            if k.startswith("data/")} == eval_expected, step
    assert report["num_images"] == 4  # 3 photos and the CMYK one.
  assert last_eval["data/skipped"] == 2
  assert any(r.getMessage().startswith(
      f"Training files: {expected['data/files_read']} files read; 8 skipped (empty 1, not_an_image 1, "
      "too_large 1, extreme_aspect 1, corrupt 1, grayscale 3); converted: "
      "cmyk 1, palette 2, alpha 2, 16bit 1, upscaled 1") for r in caplog.records)


def test_no_usable_image_is_one_error_naming_the_folder(tmp_path, monkeypatch):
  photo = _photo()
  bad = {name: encoded for name, (encoded, kinds) in _bad_files(photo).items()
         if kinds[0] in transforms.SKIP_KINDS}

  def compiled(*args, **kwargs):
    raise AssertionError("the error must come before anything compiles")

  monkeypatch.setattr(experiment, "initial_state", compiled)
  config = load_config("configs/pix2pix.py")
  for split in ("train", "eval"):
    root = tmp_path / split
    for folder in ("train", "eval"):
      (root / folder).mkdir(parents=True)
      if folder != split:
        (root / folder / "photo.jpg").write_bytes(_encode(photo, "JPEG"))
    for name, encoded in bad.items():
      (root / split / name).write_bytes(encoded)
    config.dataset = f"folder:{root}"
    with pytest.raises(configuration.ConfigError) as error:
      loop.train_and_evaluate(config, str(tmp_path / f"run_{split}"))
    message = str(error.value)
    assert str(root / split) in message and "\n" not in message
    assert f"all {len(bad)} files were skipped" in message
    assert "grayscale 3" in message and "corrupt 1" in message
