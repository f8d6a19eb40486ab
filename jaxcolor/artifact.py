"""Model artifacts: a trained colorizer as a small directory anyone can load.

  DIR/
    model.json             what it is: format version, jaxcolor version, the
                           system, its output, the run's config, training
                           image size, step, that step's evaluation, and the
                           sha256 of every other file
    variables.safetensors  the arrays the colorizer reads, by state path
                           ('generator_ema/params/down_0/kernel'): no
                           optimiser state, no discriminator, and where a run
                           keeps an EMA of its generator, only that

safetensors holds raw arrays and a JSON header: loading it never executes
code (unlike a pickle). `write` builds the directory aside and renames it;
`read` checks the format version and every file's sha256 before use.
`fetch` turns a path or URL (a directory, a .tar.gz / .tgz / .tar / .zip
archive, `file://` or `https://`) into a local directory: downloads go to a
cache (JAXCOLOR_CACHE, default ~/.cache/jaxcolor), resume where a previous
download stopped (HTTP Range), show a progress bar, and are checked against
a sha256 given as `URL#sha256=HEX` or as the `sha256` argument.
"""

import hashlib
import importlib.metadata
import json
import os
import pathlib
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from typing import Any, Callable

import numpy as np
from safetensors import numpy as safetensors_numpy
from tqdm import tqdm

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
VARIABLES = "variables.safetensors"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_CHUNK = 1 << 20


class ArtifactError(ValueError):
  """Not an artifact, a newer format, a file that fails its sha256, a
  truncated or mismatched download; the message names the file."""


def version() -> str:
  try:
    return importlib.metadata.version("jaxcolor")
  except importlib.metadata.PackageNotFoundError:  # A checkout, not installed.
    return "unknown"


def sha256_of(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


# -- writing and reading --------------------------------------------------------


def write(directory: str | os.PathLike, arrays: dict[str, np.ndarray],
          meta: dict[str, Any],
          extras: Callable[[pathlib.Path], None] | None = None
          ) -> pathlib.Path:
  """Writes the artifact `directory` (which must not exist yet).

  `arrays`: {state path: array}; `meta`: model.json's descriptive fields
  (format_version, jaxcolor_version and files are added here); `extras`,
  called with the directory being built, writes further files (the serving
  forms). Every file is listed in model.json with its sha256.
  """
  directory = pathlib.Path(directory)
  if directory.exists():
    raise ArtifactError(f"{directory} exists; choose a new --output.")
  directory.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.",
                                          dir=directory.parent))
  try:
    safetensors_numpy.save_file(
        {key: np.ascontiguousarray(value) for key, value in arrays.items()},
        str(staging / VARIABLES))
    if extras is not None:
      extras(staging)
    files = {str(p.relative_to(staging)): sha256_of(p)
             for p in sorted(staging.rglob("*")) if p.is_file()}
    record = {"format_version": FORMAT_VERSION, "jaxcolor_version": version(),
              **meta, "files": files}
    (staging / MODEL_JSON).write_text(json.dumps(record, indent=2))
    staging.rename(directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return directory


def read(directory: str | os.PathLike) -> tuple[dict[str, Any],
                                                 dict[str, np.ndarray]]:
  """(model.json, {state path: array}) of an artifact directory, checked.

  Raises:
    ArtifactError: no model.json (not an artifact), a format version newer
      than this jaxcolor reads, a missing file or one whose sha256 differs.
  """
  directory = pathlib.Path(directory)
  meta_path = directory / MODEL_JSON
  if not meta_path.is_file():
    raise ArtifactError(f"{directory} is not a jaxcolor model artifact: no "
                        f"{MODEL_JSON} (make one with `python -m "
                        "jaxcolor.export --workdir RUN --output DIR`).")
  try:
    meta = json.loads(meta_path.read_text())
    found = int(meta["format_version"])
  except (ValueError, KeyError, TypeError) as e:
    raise ArtifactError(f"{meta_path} is not a readable model.json: {e}") from None
  if found > FORMAT_VERSION:
    raise ArtifactError(
        f"{directory} has artifact format {found}; this jaxcolor "
        f"({version()}) reads up to {FORMAT_VERSION}: upgrade jaxcolor.")
  for name, expected in meta.get("files", {}).items():
    path = directory / name
    if not path.is_file():
      raise ArtifactError(f"{path} is missing from the artifact.")
    actual = sha256_of(path)
    if actual != expected:
      raise ArtifactError(f"{path}: sha256 {actual} but model.json says "
                          f"{expected} (a damaged or altered file).")
  return meta, safetensors_numpy.load_file(str(directory / VARIABLES))


# -- fetching -------------------------------------------------------------------


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get(
      "JAXCOLOR_CACHE", pathlib.Path.home() / ".cache" / "jaxcolor"))


def fetch(source: str | os.PathLike, *, sha256: str | None = None,
          progress: bool = True) -> pathlib.Path:
  """A local artifact directory for `source` (see the module docstring).

  Raises:
    ArtifactError: an unreadable URL or archive, or a sha256 mismatch.
    FileNotFoundError: a local path that does not exist.
  """
  text = str(source)
  url = urllib.parse.urlsplit(text)
  if url.fragment.startswith("sha256="):
    sha256 = sha256 or url.fragment[len("sha256="):]
    text = text.split("#", 1)[0]
  if url.scheme in ("http", "https"):
    path = _download(text, sha256, progress)
  else:
    path = pathlib.Path(urllib.parse.unquote(url.path) if url.scheme == "file"
                        else text).expanduser()
    if not path.exists():
      raise FileNotFoundError(f"No such model: {source}")
    if sha256 and path.is_file():
      _check_sha256(path, sha256, source)
  if path.is_dir():
    return path
  return _extract(path)


def _check_sha256(path: pathlib.Path, expected: str, source) -> None:
  actual = sha256_of(path)
  if not actual.startswith(expected.lower()):
    raise ArtifactError(f"{source}: sha256 {actual}, expected {expected} "
                        "(a truncated or different file).")


def _download(url: str, sha256: str | None, progress: bool) -> pathlib.Path:
  """The file at `url` in the cache, downloaded once, resumed if cut."""
  name = pathlib.PurePosixPath(urllib.parse.urlsplit(url).path).name or "model"
  key = hashlib.sha256(url.encode()).hexdigest()[:16]
  target = cache_dir() / "downloads" / key / name
  if target.is_file():
    if sha256:
      _check_sha256(target, sha256, url)
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  partial = target.with_name(target.name + ".partial")
  have = partial.stat().st_size if partial.exists() else 0
  request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"}
                                   if have else {})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      if have and response.status != 206:  # The server ignored the range.
        have = 0
      total = response.headers.get("Content-Length")
      total = int(total) + have if total is not None else None
      with open(partial, "ab" if have else "wb") as f, tqdm(
          total=total, initial=have, unit="B", unit_scale=True,
          desc=name, disable=not progress) as bar:
        for chunk in iter(lambda: response.read(_CHUNK), b""):
          f.write(chunk)
          bar.update(len(chunk))
  except OSError as e:  # URLError, HTTPError, timeouts, disk errors.
    raise ArtifactError(f"Cannot download {url}: {e} (rerun to resume; "
                        f"{partial.stat().st_size if partial.exists() else 0}"
                        " bytes so far).") from None
  if total is not None and partial.stat().st_size != total:
    raise ArtifactError(f"{url}: download stopped at "
                        f"{partial.stat().st_size} of {total} bytes; rerun to "
                        "resume.")
  if sha256:
    try:
      _check_sha256(partial, sha256, url)
    except ArtifactError:
      partial.unlink()  # Not resumable: the bytes themselves are wrong.
      raise
  partial.rename(target)
  return target


def _extract(archive: pathlib.Path) -> pathlib.Path:
  """The artifact inside `archive`, extracted once into the cache."""
  if not archive.name.endswith(ARCHIVE_SUFFIXES):
    raise ArtifactError(f"{archive} is neither an artifact directory nor an "
                        f"archive ({', '.join(ARCHIVE_SUFFIXES)}).")
  target = cache_dir() / "models" / sha256_of(archive)[:16]
  if not target.is_dir():
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=target.parent))
    try:
      if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
          z.extractall(staging)
      else:
        with tarfile.open(archive) as t:
          t.extractall(staging, filter="data")  # No links out, no devices.
      staging.rename(target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
      shutil.rmtree(staging, ignore_errors=True)
      raise ArtifactError(f"{archive}: not a readable archive ({e}).") from None
  found = [p.parent for p in target.rglob(MODEL_JSON)]
  if len(found) != 1:
    raise ArtifactError(f"{archive} holds {len(found)} model.json files; an "
                        "artifact archive holds exactly one.")
  return found[0]
