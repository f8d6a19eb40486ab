"""Hostile model artifacts: archives whose members escape (CVE-2025-4517's
shape included), decompression bombs, model.json and safetensors headers that
lie, configs that fail a run's checks, arrays the network cannot take, loose
sha256 pins, two processes on one cache, and exports (serving programs
included) that would leak the exporting machine's paths. Each bad
input is refused with one ArtifactError line naming the file, key or member,
and nothing is written where it must not be."""

import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

import helpers
from jaxcolor.inference import artifact
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.inference import exporting as export_lib
from jaxcolor.training import rundir

MiB = 1 << 20
# Budgets of a few MiB, so the bombs built here take milliseconds.
SMALL = artifact.Limits(max_bytes=4 * MiB, min_extract_bytes=1 * MiB,
                        max_expansion=4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A small artifact and its .tar.gz, exported from a run whose config and
  evaluation hold absolute local paths."""
  base = tmp_path_factory.mktemp("hostile")
  run = base / "run"
  config = helpers.load_config("configs/default.py")
  config.data_dir = str(base / "tensorflow_datasets")
  config.dataset = f"folder:{base}/photos"
  helpers.make_checkpoint(config, run, steps=(3, 6))
  rundir.RunDir(run).write_eval(6, {"checkpoint": str(run / "checkpoints/6"),
                                    "colorfulness": 1.0})
  out = base / "models" / "default"
  result = export_lib.export(run, out, archive=True)
  return out, pathlib.Path(result["archive"]), run


@pytest.fixture
def cache(tmp_path, monkeypatch):
  path = tmp_path / "cache"
  monkeypatch.setenv("JAXCOLOR_CACHE", str(path))
  return path


def _tree(root: pathlib.Path) -> set[str]:
  """Every path under `root`, links not followed."""
  found = set()
  for parent, dirs, files in os.walk(root):
    found.update(os.path.relpath(os.path.join(parent, name), root)
                 for name in dirs + files)
  return found


def _refused(call, tmp_path: pathlib.Path, match: str) -> str:
  """`call()` raises one ArtifactError line matching `match`; nothing new
  appears beside or above `tmp_path` (its parent is watched) but the cache's
  empty folders: no escaped file, no partial extraction."""
  watched = tmp_path.parent
  before = _tree(watched)
  with pytest.raises(artifact.ArtifactError, match=match) as error:
    call()
  message = str(error.value)
  assert "\n" not in message
  cache = f"{tmp_path.name}/cache"
  assert _tree(watched) - before <= {cache, f"{cache}/models",
                                     f"{cache}/downloads"}
  return message


def _member(name: str, type=tarfile.REGTYPE, data: bytes = b"", **fields):
  info = tarfile.TarInfo(name)
  info.type = type
  info.size = len(data) if type == tarfile.REGTYPE else 0
  for key, value in fields.items():
    setattr(info, key, value)
  return info, data


def _tar(path: pathlib.Path, members, **options) -> pathlib.Path:
  """A tar (gzipped for .tar.gz) holding a real model.json first, so that a
  refusal shows nothing was extracted before the bad member was seen."""
  with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w",
                    **options) as t:
    for info, data in [_member("model/model.json", data=b"{}"), *members]:
      t.addfile(info, io.BytesIO(data) if info.isreg() else None)
  return path


def _zip(path: pathlib.Path, members) -> pathlib.Path:
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("model/model.json", "{}")
    for info, data in members:
      z.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
  return path


# -- archives: members that escape ---------------------------------------------


def test_cve_2025_4517_shaped_tar_writes_nothing(tmp_path, cache):
  # CPython's test_realpath_limit_attack: directories and links whose
  # resolution overflows PATH_MAX, a link out, then files through it.
  # 'escape' resolves to the staging folder's parent, where 'flag' waits.
  flag = cache / "models" / "flag"
  flag.parent.mkdir(parents=True)
  flag.write_text("original")
  # Components sized, as there, so that the unexpanded path fits PATH_MAX
  # (from the staging folder the cache extracts into) and the expanded one
  # does not.
  steps, path = "abcdefghijklmnop", ""
  staging = cache / "models" / ".extracting.12345678"
  length = ((os.pathconf(tmp_path, "PC_PATH_MAX") - len(str(staging)) - 1)
            // (len(steps) + 1))
  component = "d" * min(length, 255)
  members = []
  for step in steps:
    members.append(_member(os.path.join(path, component), tarfile.DIRTYPE))
    members.append(_member(os.path.join(path, step), tarfile.SYMTYPE,
                           linkname=component))
    path = os.path.join(path, component)
  link = os.path.join(*steps, "l" * 254)
  members += [
      _member(link, tarfile.SYMTYPE, linkname=os.path.join(*[".."] * 16)),
      _member("escape", tarfile.SYMTYPE, linkname=os.path.join(link, "..")),
      _member("flaglink", tarfile.LNKTYPE, linkname="escape/flag"),
      _member("flaglink", data=b"overwrite"),
      _member("escape/newfile", data=b"new")]
  archive = _tar(tmp_path / "cve.tar", members)
  message = _refused(lambda: artifact.fetch(archive), tmp_path,
                     r"cve\.tar: member 'a' is a symbolic link")
  assert "regular files and directories only" in message
  assert flag.read_text() == "original"
  assert sorted(p.name for p in flag.parent.iterdir()) == ["flag"]


@pytest.mark.parametrize("type, fields, kind", [
    (tarfile.SYMTYPE, {"linkname": "/etc/passwd"}, "a symbolic link"),
    (tarfile.LNKTYPE, {"linkname": "model/model.json"}, "a hard link"),
    (tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3}, "a character device"),
    (tarfile.BLKTYPE, {"devmajor": 7, "devminor": 0}, "a block device"),
    (tarfile.FIFOTYPE, {}, "a fifo"),
], ids=["symlink", "hardlink", "chardev", "blockdev", "fifo"])
def test_tar_links_and_devices_are_refused(tmp_path, cache, type, fields,
                                           kind):
  archive = _tar(tmp_path / "bad.tar.gz",
                 [_member("model/evil", type, **fields)])
  _refused(lambda: artifact.fetch(archive), tmp_path,
           rf"bad\.tar\.gz: member 'model/evil' is {kind}; an artifact holds "
           "regular files and directories only")


@pytest.mark.parametrize("name, problem", [
    ("../escaped", "a name with a '..' part"),
    ("model/../../../../escaped", "a name with a '..' part"),
    ("ABSOLUTE", "an absolute name"),
    ("C:/escaped", "a name with a drive letter"),
    ("model\\..\\..\\escaped", "a name with a NUL or backslash"),
])
def test_tar_names_outside_the_folder_are_refused(tmp_path, cache, name,
                                                  problem):
  name = str(tmp_path / "escaped") if name == "ABSOLUTE" else name
  archive = _tar(tmp_path / "bad.tar", [_member(name, data=b"escaped")])
  _refused(lambda: artifact.fetch(archive), tmp_path,
           rf"bad\.tar: member '.*escaped' has {re.escape(problem)}")
  assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("name, mode, problem", [
    ("../escaped", 0o100644, "has a name with a '..' part"),
    ("../../../../escaped", 0, "has a name with a '..' part"),
    ("ABSOLUTE", 0o100644, "has an absolute name"),
    ("model/link", 0o120777, "is a symbolic link"),
])
def test_zip_names_outside_the_folder_and_links_are_refused(
    tmp_path, cache, name, mode, problem):
  name = str(tmp_path / "escaped") if name == "ABSOLUTE" else name
  info = zipfile.ZipInfo(name)
  info.external_attr = mode << 16
  archive = _zip(tmp_path / "bad.zip", [(info, str(tmp_path / "escaped"))])
  _refused(lambda: artifact.fetch(archive), tmp_path,
           rf"bad\.zip: member '.*(escaped|link)' {problem}")


def test_duplicate_and_nested_file_members_are_refused(tmp_path, cache):
  twice = _tar(tmp_path / "twice.tar", [_member("model/model.json",
                                                data=b"[]")])
  _refused(lambda: artifact.fetch(twice), tmp_path,
           "member 'model/model.json' clashes with another member")
  under = _tar(tmp_path / "under.tar", [_member("model/model.json/x")])
  _refused(lambda: artifact.fetch(under), tmp_path,
           "member 'model/model.json/x' clashes")


# -- archives: bombs -----------------------------------------------------------


def test_extraction_budget_defaults():
  limits = artifact.LIMITS
  assert limits.extract_budget(1 * MiB) == 64 * MiB  # The floor.
  assert limits.extract_budget(10 * MiB) == 200 * MiB  # 20x the archive.
  assert limits.extract_budget(1024 * MiB) == 2048 * MiB  # The ceiling.
  assert limits.max_members == 256


def test_sparse_tar_member_is_refused(tmp_path, cache):
  archive = _tar(tmp_path / "sparse.tar",
                 [_member("model/variables.safetensors",
                          tarfile.GNUTYPE_SPARSE)],
                 format=tarfile.GNU_FORMAT)
  _refused(lambda: artifact.fetch(archive), tmp_path,
           r"sparse\.tar: member 'model/variables.safetensors' is a sparse "
           "file")


def test_gzip_bomb_is_refused_by_its_sizes_and_on_the_stream(tmp_path, cache):
  # 16 MiB of zeros in a few kilobytes, against a budget of 1 MiB.
  bomb = _tar(tmp_path / "bomb.tar.gz",
              [_member("model/variables.safetensors", data=bytes(16 * MiB))])
  assert bomb.stat().st_size < 64 * 1024
  _refused(lambda: artifact.fetch(bomb, limits=SMALL), tmp_path,
           r"bomb\.tar\.gz: members declare \d+ bytes by "
           "'model/variables.safetensors', over the 1048576 an archive of its "
           "size may extract to")
  # A pax header is read whole by tarfile itself, before any member is
  # seen: only the bound on the decompressed stream stops it.
  pax, _ = _member("model/variables.safetensors")
  pax.pax_headers = {"comment": "0" * (16 * MiB)}
  header_bomb = _tar(tmp_path / "header.tar.gz", [(pax, b"")],
                     format=tarfile.PAX_FORMAT)
  assert header_bomb.stat().st_size < 64 * 1024
  _refused(lambda: artifact.fetch(header_bomb, limits=SMALL), tmp_path,
           r"header\.tar\.gz: decompresses past 1048576 bytes")


def test_gigabyte_bombs_are_refused_with_the_default_limits(tmp_path, cache):
  # 1 GiB of zeros, as observed: a gzip of one compressed MiB repeated (a
  # gzip file may hold many members), and a zip compressed at level 1.
  header = tarfile.TarInfo("model/variables.safetensors")
  header.size = 1024 * MiB
  zeros = gzip.compress(bytes(MiB), compresslevel=9)
  bomb = tmp_path / "bomb.tar.gz"
  bomb.write_bytes(gzip.compress(header.tobuf()) + zeros * 1024
                   + gzip.compress(bytes(2 * tarfile.RECORDSIZE)))
  assert bomb.stat().st_size < 2 * MiB
  _refused(lambda: artifact.fetch(bomb), tmp_path,
           rf"bomb\.tar\.gz: members declare {1024 * MiB} bytes by "
           rf"'model/variables.safetensors', over the {64 * MiB}")
  zipped = tmp_path / "bomb.zip"
  with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED,
                       compresslevel=1) as z:
    with z.open("model/variables.safetensors", "w") as f:
      for _ in range(1024):
        f.write(bytes(MiB))
  assert zipped.stat().st_size < 8 * MiB
  _refused(lambda: artifact.fetch(zipped), tmp_path,
           rf"bomb\.zip: members declare {1024 * MiB} bytes by "
           r"'model/variables.safetensors', over the \d+ an archive of its "
           "size may extract to")


def test_zip_bomb_and_member_count_are_refused(tmp_path, cache):
  bomb = _zip(tmp_path / "bomb.zip",
              [(zipfile.ZipInfo("model/variables.safetensors"),
                bytes(16 * MiB))])
  assert bomb.stat().st_size < 64 * 1024
  _refused(lambda: artifact.fetch(bomb, limits=SMALL), tmp_path,
           r"bomb\.zip: members declare \d+ bytes by "
           "'model/variables.safetensors', over the 1048576")
  many = _zip(tmp_path / "many.zip",
              [(zipfile.ZipInfo(f"model/{i}"), b"") for i in range(256)])
  _refused(lambda: artifact.fetch(many), tmp_path,
           r"many\.zip: 257 members, more than 256")
  many_tar = _tar(tmp_path / "many.tar",
                  [_member(f"model/{i}") for i in range(256)])
  _refused(lambda: artifact.fetch(many_tar), tmp_path,
           r"many\.tar: more than 256 members")


# -- directories: model.json and the files it lists ----------------------------


def _copy(exported, tmp_path, name="artifact") -> pathlib.Path:
  directory = tmp_path / name
  shutil.copytree(exported[0], directory)
  return directory


def _edit(directory: pathlib.Path, change=None, weights: bytes | None = None):
  """Rewrites model.json through `change(meta) -> meta`, and the weights
  (with their sha256 updated, so the check under test is the one that
  fails)."""
  meta = json.loads((directory / "model.json").read_text())
  if weights is not None:
    (directory / artifact.VARIABLES).write_bytes(weights)
    meta["files"][artifact.VARIABLES] = hashlib.sha256(weights).hexdigest()
  if change is not None:
    meta = change(meta)
  (directory / "model.json").write_text(json.dumps(meta))


def _listing(name, digest):
  return lambda meta: {**meta, "files": {**meta["files"], name: digest}}


def test_listed_files_stay_inside_the_directory(exported, tmp_path):
  outside = tmp_path / "outside.txt"
  outside.write_text("secret")
  digest = artifact.sha256_of(outside)
  cases = [
      ("../outside.txt", r"files names '\.\./outside\.txt', a name with a "
                         r"'\.\.' part"),
      ("/etc/hostname", r"files names '/etc/hostname', an absolute name"),
      ("link.txt", r"link\.txt is a symbolic link, not a regular file"),
      ("linked/outside.txt", r"linked is a symbolic link, on the way to "
                             r"linked/outside\.txt"),
      ("fifo", r"fifo is a fifo, not a regular file"),
      ("folder", r"folder is a directory, not a regular file"),
  ]
  for i, (name, match) in enumerate(cases):
    directory = _copy(exported, tmp_path, f"artifact{i}")
    (directory / "link.txt").symlink_to(outside)
    (directory / "linked").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(directory / "fifo")
    (directory / "folder").mkdir()
    _edit(directory, _listing(name, digest))
    with pytest.raises(artifact.ArtifactError, match=match):
      artifact.read(directory)


def test_weights_must_be_listed_with_whole_digests(exported, tmp_path):
  directory = _copy(exported, tmp_path)
  # The original defect: no files listed, zeroed weights, and it loaded.
  arrays = safetensors_numpy.load_file(str(directory / artifact.VARIABLES))
  _edit(directory, lambda meta: {**meta, "files": {}},
        weights=safetensors_numpy.save({k: np.zeros_like(v)
                                        for k, v in arrays.items()}))
  with pytest.raises(artifact.ArtifactError,
                     match=r"model\.json: files does not list "
                           r"variables\.safetensors"):
    artifact.read(directory)
  digest = artifact.sha256_of(directory / artifact.VARIABLES)
  for bad in (digest.upper(), digest[:8], "", None):
    _edit(directory, _listing(artifact.VARIABLES, bad))
    with pytest.raises(artifact.ArtifactError,
                       match=r"files\['variables.safetensors'\] is .*not a "
                             r"sha256 \(64 lowercase hex digits\)"):
      artifact.read(directory)


def test_listed_files_over_the_ceiling_are_refused_before_hashing(
    exported, tmp_path):
  directory = _copy(exported, tmp_path)
  big = directory / "big.bin"
  with open(big, "wb") as f:  # Sparse: no disk, and never read.
    f.truncate(artifact.LIMITS.max_bytes + 1)
  # The weights' digest is wrong too: were anything hashed first, that
  # would be the error.
  _edit(directory, lambda meta: {**meta, "files": {
      artifact.VARIABLES: "0" * 64, "big.bin": "0" * 64}})
  with pytest.raises(artifact.ArtifactError,
                     match=rf"big\.bin: {2048 * MiB + 1} bytes brings the "
                           rf"listed files to .*, over the {2048 * MiB}"):
    artifact.read(directory)


@pytest.mark.parametrize("change, match", [
    (lambda m: {**m, "image_size": 4096},
     r"model\.json: image_size 4096 differs from its config's 32\.$"),
    (lambda m: {**m, "image_size": 4096,
                "config": {**m["config"], "image_size": 4096}},
     r"model\.json: image_size 4096 is over the 1024 this jaxcolor loads"),
    (lambda m: {**m, "image_size": "64"},
     r"model\.json: image_size '64' is not an integer"),
    (lambda m: {**m, "files": []},
     r"model\.json: files is a list, not an object"),
    (lambda m: {k: v for k, v in m.items() if k != "config"},
     r"model\.json: no config"),
    (lambda m: {**m, "config": "pix2pix"},
     r"model\.json: config is a string, not an object"),
    (lambda m: {**m, "config": {**m["config"], "system": 3}},
     r"model\.json: config\.system 3 is not a system's name"),
    (lambda m: {**m, "format_version": "1"},
     r"model\.json: format_version '1' is not a format number"),
    (lambda m: {**m, "output": None},
     r"model\.json: output None is not an output's name"),
    (lambda m: {**m, "step": "6"},
     r"model\.json: step '6' is neither a step number nor null"),
    (lambda m: [m], r"model\.json holds a list, not an object"),
], ids=["image_size_differs", "image_size_too_large", "image_size_string",
        "files_list", "no_config", "config_string", "system_number",
        "format_string", "output_null", "step_string", "not_an_object"])
def test_model_json_fields_are_checked(exported, tmp_path, change, match):
  directory = _copy(exported, tmp_path)
  _edit(directory, change)
  with pytest.raises(artifact.ArtifactError, match=match) as error:
    artifact.read(directory)
  assert "\n" not in str(error.value)


def _pack(header, body: bytes) -> bytes:
  text = header if isinstance(header, bytes) else json.dumps(header).encode()
  return struct.pack("<Q", len(text)) + text + body


def test_safetensors_header_is_checked_before_loading(exported, tmp_path):
  data = (exported[0] / artifact.VARIABLES).read_bytes()
  length = struct.unpack("<Q", data[:8])[0]
  header, body = json.loads(data[8:8 + length]), data[8 + length:]
  first = min((k for k in header if k != "__metadata__"),
              key=lambda k: header[k]["data_offsets"][0])

  def entry(**fields):
    return {**header, first: {**header[first], **fields}}

  cases = [
      (struct.pack("<Q", 2 ** 62) + data[8:],
       rf"header length {2 ** 62} is past the file's"),
      (_pack(b"{not json", body), "header is not JSON"),
      (_pack(entry(dtype="Q7"), body), rf"'{first}' has dtype 'Q7'"),
      (_pack(entry(shape=[-1, 8]), body),
       rf"'{first}' has shape \[-1, 8\], not a list of non-negative"),
      (_pack(entry(shape=[2 ** 40, 2 ** 40]), body),
       rf"'{first}': shape \({2 ** 40},{2 ** 40}\) of F32 takes "
       rf"{2 ** 82} bytes, but its data_offsets span"),
      (_pack(entry(data_offsets=[0, 10 ** 12]), body),
       rf"'{first}' has data_offsets \[0, {10 ** 12}\], not \[begin, end\]"),
      (_pack({k: v for k, v in header.items() if k != first}, body),
       r"'.*' starts at data byte \d+, not 0: entries overlap or leave a "
       "gap"),
  ]
  for i, (weights, match) in enumerate(cases):
    directory = _copy(exported, tmp_path, f"artifact{i}")
    _edit(directory, weights=weights)
    with pytest.raises(artifact.ArtifactError,
                       match=r"variables\.safetensors: " + match):
      artifact.read(directory)


def test_config_and_arrays_are_checked_against_the_network(exported,
                                                           tmp_path):
  arrays = safetensors_numpy.load_file(
      str(exported[0] / artifact.VARIABLES))
  kernel = sorted(k for k in arrays if k.endswith("/kernel"))[0]
  shape = arrays[kernel].shape
  wrong = (shape[0] - 1,) + shape[1:]
  text = lambda s: "(" + ",".join(map(str, s)) + ")"  # noqa: E731
  cases = [
      ({**arrays, kernel: np.zeros(wrong, np.float32)}, None,
       f"variables.safetensors: {kernel} has shape {text(wrong)}, the "
       f"network needs {text(shape)}."),
      ({**arrays, kernel: arrays[kernel].astype(np.float64)}, None,
       f"variables.safetensors: {kernel} has dtype float64, the network "
       "needs float32."),
      ({k: v for k, v in arrays.items() if k != kernel}, None,
       "variables.safetensors lacks 1 array(s) its output 'generator_ema' "
       f"reads, first {kernel}."),
      (None, lambda m: {**m, "config": {**m["config"], "system": "pix3pix"}},
       "model.json: its config and output do not build a colorizer: "
       "config.system='pix3pix' is unknown (did you mean 'pix2pix'?)"),
      (None, lambda m: {**m, "output": "discriminator"},
       "model.json: its config and output do not build a colorizer: "
       "output='discriminator': this run's outputs are"),
  ]
  for i, (changed, change, expected) in enumerate(cases):
    directory = _copy(exported, tmp_path, f"artifact{i}")
    _edit(directory, change, weights=None if changed is None else
          safetensors_numpy.save(changed))
    with pytest.raises(artifact.ArtifactError) as error:
      colorizer_lib.Colorizer.from_pretrained(directory)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{directory}/{expected}"), message


def _config(**fields):
  """A model.json change: config fields set (a value) or dropped (None)."""
  def change(meta):
    config = {**meta["config"], **fields}
    return {**meta, "config": {k: v for k, v in config.items()
                               if v is not None}}
  return change


@pytest.mark.parametrize("change, expected", [
    (_config(generator_emma_decay=0.999),
     "Unknown config field 'generator_emma_decay' (did you mean "
     "'generator_ema_decay'?)."),
    (_config(compute_dtype="float8"),
     "config.compute_dtype='float8' is invalid: one of float32, bfloat16."),
    (_config(worker_count="many"),
     "config.worker_count='many' is invalid: 0 (in-process) or a positive "
     "number of worker processes."),
    (_config(evaluation={"checkpoints": "latest", "fid_weights": "",
                         "auc_max_distance": 150.0, "auc_step": [1],
                         "num_report_images": 16}),
     "config.evaluation.auc_step=[1] is invalid: a positive distance in ab "
     "units."),
    (_config(log_every_steps=None), "it lacks 'log_every_steps'."),
])
def test_config_is_validated_as_a_runs_is(exported, tmp_path, change,
                                          expected):
  directory = _copy(exported, tmp_path)
  _edit(directory, change)
  with pytest.raises(artifact.ArtifactError) as error:
    colorizer_lib.Colorizer.from_pretrained(directory)
  assert str(error.value) == (f"{directory}/model.json: its config does not "
                              f"validate: {expected}")


# -- pins ----------------------------------------------------------------------


def test_sha256_pins_must_be_whole_digests(exported, tmp_path, cache):
  out, archive, _ = exported
  digest = artifact.sha256_of(archive)
  for pin in ("", digest[0], digest[:63], digest[:63] + "g", digest + "0"):
    _refused(lambda: artifact.fetch(f"{archive}#sha256={pin}"), tmp_path,
             rf"sha256 pin '{pin}' is not 64 hexadecimal digits")
    _refused(lambda: artifact.fetch(archive, sha256=pin), tmp_path,
             rf"sha256 pin '{pin}' is not 64 hexadecimal digits")
  _refused(lambda: artifact.fetch(out, sha256=digest), tmp_path,
           r"default is a directory: a sha256 pin checks an archive's bytes")
  wrong = "0" * 64
  _refused(lambda: artifact.fetch(archive, sha256=wrong), tmp_path,
           rf"sha256 {digest}, expected {wrong}")
  # The whole digest, in either case, is the one pin that passes.
  local = artifact.fetch(f"{archive}#sha256={digest.upper()}")
  assert (local / "model.json").is_file()


# -- the cache: concurrent processes and a complete .partial -------------------


@pytest.fixture
def server(exported):
  with helpers.serve_folder(exported[1].parent) as url:
    yield url


_RACE = """
import pathlib, sys, time
from jaxcolor.inference import artifact
ready, go, archive, url = sys.argv[1:]
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
  time.sleep(0.001)
print(artifact.fetch(archive, progress=False))
print(artifact.fetch(url, progress=False))
"""


def test_two_processes_fetch_the_same_archive_and_url(exported, server,
                                                      tmp_path):
  archive = exported[1]
  url = f"{server}/{archive.name}"
  helpers.RangeFiles.pause = 0.005  # About 0.2 s a download: the two overlap.
  for trial in range(3):
    cache = tmp_path / f"cache{trial}"
    go = tmp_path / f"go{trial}"
    ready = [tmp_path / f"ready{trial}_{i}" for i in range(2)]
    processes = [subprocess.Popen(
        [sys.executable, "-c", _RACE, str(r), str(go), str(archive), url],
        env={**os.environ, "JAXCOLOR_CACHE": str(cache)}, cwd=helpers.REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in ready]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
      time.sleep(0.01)
    go.touch()  # Both start together.
    results = [p.communicate(timeout=120) for p in processes]
    for process, (stdout, stderr) in zip(processes, results):
      assert process.returncode == 0, stderr[-2000:]
    assert results[0][0] == results[1][0]
    assert [p.name for p in (cache / "models").iterdir()] == [
        pathlib.Path(results[0][0].split()[0]).parent.name]
    downloads = [p.name for p in (cache / "downloads").rglob("*")
                 if p.is_file()]
    assert sorted(downloads) == [archive.name, archive.name + ".lock"]
  # One download a trial: the other process waited.
  assert len(helpers.RangeFiles.requests) == 3


def test_a_complete_partial_answered_416_is_done(exported, server, tmp_path,
                                                 cache):
  archive = exported[1]
  digest, data = artifact.sha256_of(archive), archive.read_bytes()
  url = f"{server}/{archive.name}"
  helpers.RangeFiles.cut_after = 1000
  with pytest.raises(artifact.ArtifactError, match="rerun to resume"):
    artifact.fetch(url, progress=False)
  partial = next(cache.rglob("*.partial"))
  partial.write_bytes(data)  # Killed after the last byte, before the rename.
  helpers.RangeFiles.requests = []
  local = artifact.fetch(f"{url}#sha256={digest}", progress=False)
  assert helpers.RangeFiles.requests == [(f"bytes={len(data)}-", 416)]
  assert (local / "model.json").is_file() and not partial.exists()

  # A .partial longer than the file: the server's size says it is stale.
  other = f"{url}?other"
  helpers.RangeFiles.cut_after = 1000
  with pytest.raises(artifact.ArtifactError, match="rerun to resume"):
    artifact.fetch(other, progress=False)
  partial = next(cache.rglob("*.partial"))
  partial.write_bytes(data + b"more")
  _refused(lambda: artifact.fetch(other, progress=False), tmp_path,
           rf"{len(data) + 4} bytes saved, but the file now has {len(data)}; "
           "rerun to download it again")
  assert not partial.exists()


# -- export --------------------------------------------------------------------


def test_export_holds_no_local_paths_and_public_modes(exported):
  out, archive, run = exported
  meta = json.loads((out / "model.json").read_text())
  assert meta["run"] == "run" and meta["step"] == 6
  assert meta["evaluation"] == {"step": 6, "colorfulness": 1.0}  # No path.
  assert meta["config"]["dataset"] == "folder:photos"
  assert meta["config"]["data_dir"] == "tensorflow_datasets"
  local = str(run.parent)
  assert local not in (out / "model.json").read_text()
  assert local.encode() not in gzip.decompress(archive.read_bytes())

  mode = lambda p: p.stat().st_mode & 0o7777  # noqa: E731
  assert mode(out) == 0o755 and mode(archive) == 0o644
  for path in out.rglob("*"):
    assert mode(path) == (0o755 if path.is_dir() else 0o644), path
  with tarfile.open(archive) as t:
    for info in t.getmembers():
      assert info.mode == (0o755 if info.isdir() else 0o644), info.name
      assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")


def test_serving_programs_hold_no_local_paths(exported, tmp_path):
  # JAX writes the file of every frame that traced an operation into the
  # program's locations: this checkout's, the libraries', this test's.
  run = exported[2]
  out = tmp_path / "served"
  export_lib.export(run, out, stablehlo=True, saved_model=True)
  local = {str(helpers.REPO), str(tmp_path.parent),
           str(pathlib.Path(np.__file__).parents[1])}  # site-packages
  files = {str(p.relative_to(out)): p.read_bytes()
           for p in out.rglob("*") if p.is_file()}
  assert {"serving/colorize.stablehlo",
          "serving/saved_model/saved_model.pb"} <= set(files)
  assert b"rgb_program.py" in files["serving/colorize.stablehlo"]  # Names stay.
  leaks = [(name, path) for name, data in files.items() for path in local
           if path.encode() in data]
  assert leaks == []


# -- the command line ----------------------------------------------------------


def test_command_line_names_a_bad_model_in_one_line(exported, tmp_path):
  photo = sorted((helpers.REPO / "jaxcolor" / "sample_data" / "eval").glob(
      "*.jpg"))[0]
  linked = _tar(tmp_path / "linked.tar.gz",
                [_member("model/evil", tarfile.SYMTYPE, linkname="/etc")])
  shrunk = _copy(exported, tmp_path)
  _edit(shrunk, lambda m: {**m, "image_size": 4096})
  for model, expected in [
      (linked, "member 'model/evil' is a symbolic link"),
      (shrunk, "model.json: image_size 4096 differs from its config's 32."),
  ]:
    output = tmp_path / "colorized"
    result = subprocess.run(
        [sys.executable, "-m", "jaxcolor.colorize", f"--model={model}",
         f"--output={output}", str(photo)], capture_output=True, text=True,
        env={**os.environ, "JAXCOLOR_CACHE": str(tmp_path / "cache")},
        timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0] == result.stderr.strip().splitlines()[-1]
    assert expected in errors[0] and str(model) in errors[0]
    assert not output.exists()
