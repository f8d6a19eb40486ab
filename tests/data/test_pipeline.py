"""Tests of jaxcolor.data: sources, robust decoding, grain iterators."""

import collections
import io
import pathlib
import shutil
import struct
import zlib

import grain
import numpy as np
import pytest
from PIL import Image

from jaxcolor import data
from jaxcolor.data import sources, transforms


def _train(dataset, **kwargs):
  kwargs = {"image_size": 32, "global_batch_size": 4, "seed": 0,
            "process_index": 0, "process_count": 1, **kwargs}
  return data.create_train_iterator(dataset, **kwargs)


def _eval(dataset, **kwargs):
  kwargs = {"image_size": 32, "batch_size": 10, "num_images": None,
            "process_index": 0, "process_count": 1, **kwargs}
  return list(data.create_eval_batches(dataset, **kwargs))


def _png(pixels: np.ndarray, bit_depth: int, color_type: int) -> bytes:
  """A PNG written by hand: Pillow cannot write 48-bit RGB."""
  height, width = pixels.shape[:2]
  dtype = ">u2" if bit_depth == 16 else "u1"
  raw = b"".join(b"\0" + row.astype(dtype).tobytes() for row in pixels)
  return _png_chunks(width, height, bit_depth, color_type, zlib.compress(raw))


def _png_chunks(width, height, bit_depth, color_type, idat) -> bytes:
  def chunk(kind, body):
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
  header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
          + chunk(b"IEND", b""))


def _bomb_png(side: int) -> bytes:
  """A black 1-bit PNG of side x side pixels: a few kB on disk."""
  compressor = zlib.compressobj(9)
  row = b"\0" * (1 + (side + 7) // 8)
  idat = b"".join(compressor.compress(row) for _ in range(side))
  return _png_chunks(side, side, 1, 0, idat + compressor.flush())


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  im.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def _sample_photos() -> list[pathlib.Path]:
  return sorted((sources.sample_dir() / "train").glob("*.jpg"))


# Files the training pipeline must skip or convert, with the event each adds.
def _awkward_files(photo: Image.Image) -> dict[str, tuple[bytes, str]]:
  jpeg = _encode(photo, "JPEG")
  rng = np.random.default_rng(0)
  rgba = np.dstack([np.asarray(photo.resize((40, 30))),
                    rng.integers(0, 256, (30, 40), dtype=np.uint8)])
  rotated = photo.resize((40, 30))
  exif = Image.Exif()
  exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
  return {
      "truncated.jpg": (jpeg[: len(jpeg) // 2], "corrupt"),
      "zero_bytes.jpg": (b"", "empty"),
      "notes.jpg": (b"this is a text file, not a photo\n", "not_an_image"),
      "cmyk.jpg": (_encode(photo.convert("CMYK"), "JPEG"), "converted_cmyk"),
      "rgb16.png": (_png((np.asarray(photo.resize((40, 30)), np.uint16) * 257),
                         16, 2), "converted_16bit"),
      "rgba.png": (_encode(Image.fromarray(rgba, "RGBA"), "PNG"),
                   "converted_alpha"),
      "palette.png": (_encode(photo.convert("P", palette=Image.Palette.ADAPTIVE),
                              "PNG"), "converted_palette"),
      "tiny.png": (_encode(photo.resize((8, 8)), "PNG"), "upscaled"),
      "gray.jpg": (_encode(photo.convert("L"), "JPEG"), "grayscale"),
      "gray_as_rgb.jpg": (_encode(photo.convert("L").convert("RGB"), "JPEG"),
                          "grayscale"),
      "rotated.jpg": (_encode(rotated, "JPEG", exif=exif), "exif_rotated"),
      # 81 MP: refused by jaxcolor's guard (64 MP) before decoding.
      "bomb.png": (_bomb_png(9000), "too_large"),
      # 400 MP: refused by Pillow's own DecompressionBombError at open.
      "bomb_pil.png": (_bomb_png(20000), "too_large"),
  }


@pytest.fixture(scope="module")
def awkward_folder(tmp_path_factory):
  """train/: 6 good photos + every kind of awkward file; eval/: 3 photos and
  2 broken files."""
  root = tmp_path_factory.mktemp("awkward")
  (root / "train" / "nested").mkdir(parents=True)
  (root / "eval").mkdir()
  photos = _sample_photos()
  for photo in photos[:6]:
    shutil.copy(photo, root / "train" / "nested" / photo.name)
  for photo in photos[6:9]:
    shutil.copy(photo, root / "eval" / photo.name)
  (root / "eval" / "zz_broken.jpg").write_bytes(b"")
  (root / "eval" / "zz_gray.png").write_bytes(
      _encode(Image.open(photos[0]).convert("L"), "PNG"))
  with Image.open(photos[0]) as photo:
    for name, (encoded, _) in _awkward_files(photo.convert("RGB")).items():
      (root / "train" / name).write_bytes(encoded)
  (root / "train" / "README.txt").write_text("not an image extension")
  return root


def test_sample_batches_have_shapes_and_dtypes():
  assert data.describe("sample") == {
      "name": "sample", "num_train": 288, "num_eval": 32,
      "has_labels": False, "num_classes": None}
  # Process index and count from JAX (one process here).
  batch = next(data.create_train_iterator(
      "sample", image_size=48, global_batch_size=6, seed=0))
  assert set(batch) == {"image"}
  assert batch["image"].shape == (6, 48, 48, 3)
  assert batch["image"].dtype == np.uint8
  assert batch["image"].std() > 10  # Real photos, not padding.


def test_same_seed_same_batches_other_seed_other_batches():
  first, second, other = (_train("sample", seed=s) for s in (3, 3, 4))
  for _ in range(3):
    a, b, c = next(first), next(second), next(other)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])


def test_state_round_trip_resumes_at_the_next_batch():
  iterator = _train("sample", seed=1)
  for _ in range(2):
    next(iterator)
  state = iterator.get_state()
  expected = next(iterator)
  resumed = _train("sample", seed=1)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["image"], expected["image"])


def test_orbax_checkpoint_of_the_iterator(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  iterator = _train("sample", seed=2)
  next(iterator)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(1, args=ocp.args.Composite(
        data_iter=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    expected = next(iterator)
    restored = _train("sample", seed=2)
    manager.restore(1, args=ocp.args.Composite(
        data_iter=grain.checkpoint.CheckpointRestore(restored)))
  np.testing.assert_array_equal(next(restored)["image"], expected["image"])


@pytest.fixture(scope="module")
def colored_folder(tmp_path_factory):
  """40 training images, each one flat color: a crop still names its file."""
  root = tmp_path_factory.mktemp("colors")
  (root / "train").mkdir()
  (root / "val").mkdir()
  for i in range(40):
    color = (20 + 5 * i, 220 - 4 * i, 60 + (i % 7) * 20)
    Image.new("RGB", (24, 20), color).save(root / "train" / f"{i:02d}.png")
  Image.new("RGB", (24, 20), (200, 30, 30)).save(root / "val" / "red.png")
  return root


def _colors(batches) -> list[tuple[int, ...]]:
  return [tuple(image[0, 0]) for batch in batches for image in batch["image"]]


def test_processes_read_disjoint_images(colored_folder):
  dataset = f"folder:{colored_folder}"
  seen = []
  for index in range(2):
    iterator = _train(dataset, global_batch_size=8, process_index=index,
                      process_count=2, image_size=16)
    # One epoch: 40 images, 20 per process, 4 per process and batch.
    seen.append(_colors(next(iterator) for _ in range(5)))
  assert len(set(seen[0])) == len(seen[0]) == 20
  assert not set(seen[0]) & set(seen[1])
  assert len(set(seen[0]) | set(seen[1])) == 40  # Not the val/ image.


def test_batch_size_must_divide_among_processes():
  with pytest.raises(ValueError, match=r"global_batch_size=6.*process_count=4"):
    _train("sample", global_batch_size=6, process_index=0, process_count=4)


def test_awkward_files_are_skipped_or_converted_and_counted(awkward_folder):
  iterator = _train(f"folder:{awkward_folder}", image_size=24,
                    global_batch_size=4)
  # 12 usable training images per epoch (6 photos, cmyk, rgb16, rgba,
  # palette, tiny, rotated): 8 batches cover the first epoch whole.
  batches = [next(iterator) for _ in range(8)]
  assert all(b["image"].shape == (4, 24, 24, 3) for b in batches)
  with Image.open(_sample_photos()[0]) as photo:
    planted = collections.Counter(
        event for _, event in _awkward_files(photo).values())
  counts = data.training_counts(iterator)
  # Each file once, although the stream is in its third epoch.
  assert counts == {**dict.fromkeys(counts, 0), **planted,
                    "files_read": 6 + len(_awkward_files(photo))}


def test_each_awkward_file_is_decoded_or_refused_as_expected():
  usable = {"cmyk.jpg", "rgb16.png", "rgba.png", "palette.png", "tiny.png",
            "rotated.jpg"}
  decode = transforms.DecodeAndResize(24)
  with Image.open(_sample_photos()[0]) as photo:
    files = _awkward_files(photo.convert("RGB"))
  for name, (encoded, event) in files.items():
    record = decode.map({"encoded": encoded, "key": name})
    assert event in record[transforms.EVENTS], (name, record[transforms.EVENTS])
    assert ("image" in record) == (name in usable), name
    if name in usable:
      image = record["image"]
      assert image.dtype == np.uint8 and min(image.shape[:2]) == 24, name
      assert not transforms.is_grayscale(image), name
  half_transparent = np.zeros((30, 30, 4), np.uint8)
  half_transparent[..., 0] = 255  # Red, opaque on the left half only.
  half_transparent[:, :15, 3] = 255
  composited = decode.map({"encoded": _encode(
      Image.fromarray(half_transparent, "RGBA"), "PNG"), "key": "red.png"})
  assert (composited["image"][:, :8] == [255, 0, 0]).all()
  assert (composited["image"][:, -8:] == 255).all()  # White behind.


def test_decode_respects_exif_orientation_and_guard():
  photo = Image.new("RGB", (40, 30), (200, 100, 50))
  exif = Image.Exif()
  exif[0x0112] = 6
  image, events = transforms.decode(_encode(photo, "JPEG", exif=exif))
  assert image.size == (30, 40) and events == ["exif_rotated"]
  image, events = transforms.decode(_encode(photo, "PNG"), max_pixels=1000)
  assert image is None and events == ["too_large"]
  record = transforms.DecodeAndResize(16, max_pixels=1000).map(
      {"encoded": _encode(photo, "PNG"), "key": "big.png"})
  assert "image" not in record and record[transforms.EVENTS] == ("too_large",)


def test_eval_batches_are_padded_with_a_mask(awkward_folder):
  batches = _eval(f"folder:{awkward_folder}", batch_size=4)
  # eval/: 3 photos, a zero-byte file and a grayscale PNG, in name order.
  assert len(batches) == 2
  assert [b["mask"].tolist() for b in batches] == [
      [True, True, True, False], [False, False, False, False]]
  assert batches[0]["image"].shape == (4, 32, 32, 3)
  assert batches[0]["mask"].dtype == np.bool_
  assert not batches[1]["image"].any()


def test_eval_is_deterministic_center_cropped_and_equal_across_processes():
  first = _eval("sample", batch_size=10)
  assert [b["mask"].sum() for b in first] == [10, 10, 10, 2]
  for a, b in zip(first, _eval("sample", batch_size=10)):
    np.testing.assert_array_equal(a["image"], b["image"])
  record = sources.open_dataset("sample").eval[0]
  resized = transforms.DecodeAndResize(32).map(record)["image"]
  np.testing.assert_array_equal(first[0]["image"][0],
                                transforms.center_crop(resized, 32))
  shares = [_eval("sample", batch_size=8, num_images=25, process_index=i,
                  process_count=2) for i in range(2)]
  assert [len(s) for s in shares] == [2, 2]
  assert sum(b["mask"].sum() for s in shares for b in s) == 25


def test_flat_folder_holds_out_about_five_percent(tmp_path):
  for i in range(200):
    Image.new("RGB", (4, 4), (i, 255 - i, 90)).save(tmp_path / f"{i:03d}.bmp")
  info = data.describe(f"folder:{tmp_path}")
  assert info["num_train"] + info["num_eval"] == 200
  assert 3 <= info["num_eval"] <= 20
  one = tmp_path / "one"
  one.mkdir()
  Image.new("RGB", (4, 4)).save(one / "a.TIFF")
  Image.new("RGB", (4, 4)).save(one / "b.JPG")
  assert data.describe(f"folder:{one}")["num_eval"] == 1


def test_folder_without_usable_images_is_an_error_naming_it(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "notes.txt").write_text("no images here")
  with pytest.raises(ValueError, match=str(empty)):
    _train(f"folder:{empty}")
  broken = tmp_path / "broken"
  broken.mkdir()
  for i in range(30):
    (broken / f"{i}.jpg").write_bytes(b"")
  with pytest.raises(ValueError, match=f"{broken}.*no usable"):
    _train(f"folder:{broken}")
  with pytest.raises(FileNotFoundError, match="missing"):
    _train(f"folder:{tmp_path / 'missing'}")


def test_unknown_dataset_is_a_value_error():
  with pytest.raises(ValueError, match="Unknown dataset 'imagenet'"):
    data.describe("imagenet")


def test_tfds_datasets_under_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
    info = data.describe("places365_small", data_dir=str(tmp_path))
    assert info["has_labels"] and info["num_classes"] == 365
    assert info["num_train"] == info["num_eval"] == 12
    batch = next(_train("places365_small", data_dir=str(tmp_path)))
    assert batch["image"].shape == (4, 32, 32, 3)
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (4,)
    assert ((0 <= batch["label"]) & (batch["label"] < 365)).all()
    batches = _eval("cifar10", data_dir=str(tmp_path), batch_size=5)
    assert data.describe("cifar10", data_dir=str(tmp_path))["num_classes"] == 10
  assert [b["mask"].sum() for b in batches] == [5, 5, 2]
  assert batches[0]["label"].dtype == np.int32
  assert batches[0]["image"].shape == (5, 32, 32, 3)


def test_unprepared_tfds_dataset_error_says_how_to_prepare(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(data.DatasetNotPreparedError) as error:
    data.describe("cifar10", data_dir=str(tmp_path))
  message = str(error.value)
  assert "\n" not in message
  assert "'cifar10'" in message and str(tmp_path) in message
  assert f"tfds build cifar10 --data_dir {tmp_path}" in message
  with pytest.raises(data.DatasetNotPreparedError, match="downloads/manual"):
    _train("imagenet2012", data_dir=str(tmp_path))


def test_worker_processes_give_the_same_batches_and_counts(awkward_folder):
  from absl import flags
  if not flags.FLAGS.is_parsed():  # grain workers read absl flags.
    flags.FLAGS.mark_as_parsed()
  dataset = f"folder:{awkward_folder}"
  results = []
  for workers in (0, 1):
    iterator = _train(dataset, worker_count=workers, seed=5)
    batches = [next(iterator)["image"] for _ in range(8)]
    results.append((batches, data.training_counts(iterator),
                    iterator.get_state()))
  (serial, serial_counts, _), (parallel, parallel_counts, state) = results
  for a, b in zip(serial, parallel):
    np.testing.assert_array_equal(a, b)
  # Counted in this process although decoded in the worker.
  assert parallel_counts == serial_counts and parallel_counts["corrupt"] == 1
  # The counts are part of the (checkpointed) state, workers or not.
  resumed = _train(dataset, worker_count=1, seed=5)
  resumed.set_state(state)
  assert data.training_counts(resumed) == parallel_counts
