"""Model artifacts: a trained colorizer as a small directory anyone can load.

  DIR/
    model.json             what it is: format version, jaxcolor version, the
                           system, its output, the run's name and config,
                           training image size, step, that step's
                           evaluation, and the sha256 of every other file
    variables.safetensors  the arrays the colorizer reads, by state path
                           ('generator_ema/params/down_0/kernel'): no
                           optimizer state, no discriminator, and where a run
                           keeps an EMA of its generator, only that

safetensors holds raw arrays and a JSON header: loading it never executes
code (unlike a pickle). `write` builds the directory aside and renames it
(directories 0755, files 0644, whatever the umask); `read` checks model.json,
every listed file's sha256 and the safetensors header before use.
`fetch` turns a path or URL (a directory, a .tar.gz / .tgz / .tar / .zip
archive, `file://` or `https://`) into a local directory: archives are
extracted into the cache (jaxcolor/safety/archive.py), URLs downloaded into it
(jaxcolor/safety/download.py: JAXCOLOR_CACHE, default ~/.cache/jaxcolor; resumed,
locked against concurrent processes), and either is checked against a sha256
given as `URL#sha256=HEX` or as the `sha256` argument (64 hex digits,
compared whole; a directory cannot be pinned).

What a user hands `fetch` and `read` is hostile until checked:

- `Limits` bounds the work an artifact can demand. Defaults: an archive
  extracts to at most max(64 MiB, 20 x its own size) and never more than
  2 GiB, counted on the decompressed stream while it is read (declared sizes
  are not trusted, and tarfile reads pax headers whole), with at most 256
  members and no sparse ones. Trained float32 weights barely compress (about
  1.1x), so 20x is far above any real artifact and far below a bomb's 1000x;
  the 64 MiB floor keeps small models with zero-initialized parts loadable.
  2 GiB is three times the largest paper variant's artifact (a 256-px
  pix2pix U-Net's 220 MB of weights, and as much again in each of its two
  serving forms). A directory's listed files may
  hold 2 GiB in all, checked by size before any is hashed, and a download
  stops past 2 GiB; model.json and the safetensors header take at most
  16 MiB; the training image size is at most 1024 (the network runs at that
  square on every call).
- model.json is checked field by field, the files it lists must lie inside
  the directory (no links; jaxcolor/safety/untrusted.py), the weights must be among
  them, and the safetensors header is parsed (jaxcolor/safety/safetensors_header.py:
  offsets, dtypes, shapes and sizes consistent with the file) before
  safetensors reads it.
"""

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import tempfile
import urllib.parse
from typing import Any, Callable

import numpy as np
from safetensors import numpy as safetensors_numpy

from jaxcolor.core.errors import ArtifactError, error_line, quote
from jaxcolor.safety import archive
from jaxcolor.safety import download
from jaxcolor.safety import safetensors_header
from jaxcolor.safety import untrusted
from jaxcolor.safety.download import cache_dir
from jaxcolor.safety.safetensors_header import shape_text
from jaxcolor.safety.untrusted import is_int, json_kind, set_public_modes, sha256_of

# Callers keep reaching these through this module, wherever they live.
__all__ = ["ArtifactError", "Limits", "LIMITS", "FORMAT_VERSION",
           "MODEL_JSON", "VARIABLES", "cache_dir", "error_line", "fetch",
           "read", "set_public_modes", "sha256_of", "shape_text", "version",
           "write"]

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
VARIABLES = "variables.safetensors"
_MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
  """How much reading, writing and memory an artifact may ask for (see the
  module docstring for why these defaults).

  Attributes:
    max_bytes: the ceiling on an archive's extracted bytes, on the files
      model.json lists (together) and on a download.
    min_extract_bytes: what any archive may extract to, however small.
    max_expansion: extracted bytes allowed per archive byte above that.
    max_members: members of an archive.
    max_header_bytes: model.json, and the safetensors header.
    max_image_size: the training image size model.json may give.
  """
  max_bytes: int = 2048 * _MiB
  min_extract_bytes: int = 64 * _MiB
  max_expansion: int = 20
  max_members: int = 256
  max_header_bytes: int = 16 * _MiB
  max_image_size: int = 1024

  def extract_budget(self, archive_bytes: int) -> int:
    """The bytes an archive of `archive_bytes` may extract to."""
    return min(self.max_bytes, max(self.min_extract_bytes,
                                   self.max_expansion * archive_bytes))


LIMITS = Limits()


def version() -> str:
  try:
    return importlib.metadata.version("jaxcolor")
  except importlib.metadata.PackageNotFoundError:  # A checkout, not installed.
    return "unknown"


# -- writing and reading -------------------------------------------------------


def write(directory: str | os.PathLike, arrays: dict[str, np.ndarray],
          meta: dict[str, Any],
          extras: Callable[[pathlib.Path], None] | None = None
          ) -> pathlib.Path:
  """Writes the artifact `directory` (which must not exist yet).

  `arrays`: {state path: array}; `meta`: model.json's descriptive fields
  (format_version, jaxcolor_version and files are added here); `extras`,
  called with the directory being built, writes further files (the serving
  forms). Every file is listed in model.json with its sha256. The modes are
  set to 0755 / 0644: the staging directory is private (mkdtemp's 0700) until
  it is renamed, and an artifact is meant to be handed on.
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
    set_public_modes(staging)
    staging.rename(directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return directory


def read(directory: str | os.PathLike, *, limits: Limits = LIMITS
         ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(model.json, {state path: array}) of an artifact directory, checked.

  Raises:
    ArtifactError: no model.json (not an artifact), a format version newer
      than this jaxcolor reads, a field of the wrong type or value, a listed
      file outside the directory, a link, too large, missing or failing its
      sha256, or a safetensors header inconsistent with its file.
  """
  directory = pathlib.Path(directory)
  meta_path = directory / MODEL_JSON
  if not meta_path.is_file():
    raise ArtifactError(f"{directory} is not a jaxcolor model artifact: no "
                        f"{MODEL_JSON} (make one with `python -m "
                        "jaxcolor.export --workdir RUN --output DIR`).")
  with untrusted.open_regular(directory, (MODEL_JSON,), meta_path) as f:
    if os.fstat(f.fileno()).st_size > limits.max_header_bytes:
      raise ArtifactError(f"{meta_path} is over {limits.max_header_bytes} "
                          "bytes; a model.json is a few kilobytes.")
    text = f.read()
  try:
    meta = json.loads(text)
  except (ValueError, RecursionError) as e:
    raise ArtifactError(f"{meta_path} is not a readable model.json: "
                        f"{error_line(e)}") from None
  _check_meta(meta, meta_path, limits)
  files = meta["files"]
  # Every size is checked before anything is hashed: a listed file could be
  # a sparse terabyte.
  total = 0
  for name in files:
    parts = _listed_parts(name, meta_path)
    with untrusted.open_regular(directory, parts, meta_path) as f:
      size = os.fstat(f.fileno()).st_size
    total += size
    if size > limits.max_bytes or total > limits.max_bytes:
      raise ArtifactError(
          f"{directory / name}: {size} bytes brings the listed files to "
          f"{total}, over the {limits.max_bytes} an artifact may hold.")
  for name, expected in files.items():
    path = directory / name
    digest = hashlib.sha256()
    with untrusted.open_regular(directory, _listed_parts(name, meta_path),
                                meta_path) as f:
      for chunk in iter(lambda: f.read(untrusted.CHUNK), b""):
        digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
      raise ArtifactError(f"{path}: sha256 {actual} but model.json says "
                          f"{expected} (a damaged or altered file).")
  weights = directory / VARIABLES
  safetensors_header.check(weights, limits.max_header_bytes)
  try:
    arrays = safetensors_numpy.load_file(str(weights))
  except Exception as e:  # SafetensorError and friends, past our own checks.
    raise ArtifactError(f"{weights}: not readable as safetensors: "
                        f"{error_line(e)}") from None
  return meta, arrays


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _check_meta(meta: Any, where: pathlib.Path, limits: Limits) -> None:
  """model.json's fields, by type and value; the first bad one, named."""
  if not isinstance(meta, dict):
    raise ArtifactError(f"{where} holds {json_kind(meta)}, not an object.")
  found = meta.get("format_version")
  if not is_int(found) or found < 1:
    raise ArtifactError(f"{where}: format_version {found!r} is not a format "
                        "number (a positive integer).")
  if found > FORMAT_VERSION:
    raise ArtifactError(
        f"{where.parent} has artifact format {found}; this jaxcolor "
        f"({version()}) reads up to {FORMAT_VERSION}: upgrade jaxcolor.")
  if "config" not in meta:
    raise ArtifactError(f"{where}: no config (the run's configuration).")
  config = meta["config"]
  if not isinstance(config, dict):
    raise ArtifactError(f"{where}: config is {json_kind(config)}, not an "
                        "object (the run's configuration).")
  if not isinstance(config.get("system"), str):
    raise ArtifactError(f"{where}: config.system {config.get('system')!r} is "
                        "not a system's name.")
  size = config.get("image_size")
  if not is_int(size) or size < 1:
    raise ArtifactError(f"{where}: config.image_size {size!r} is not a "
                        "positive integer.")
  image_size = meta.get("image_size")
  if not is_int(image_size):
    raise ArtifactError(f"{where}: image_size {image_size!r} is not an "
                        "integer.")
  if image_size != size:
    raise ArtifactError(f"{where}: image_size {image_size} differs from its "
                        f"config's {size}.")
  if image_size > limits.max_image_size:
    raise ArtifactError(f"{where}: image_size {image_size} is over the "
                        f"{limits.max_image_size} this jaxcolor loads (the "
                        "network runs at that square on every call).")
  output = meta.get("output")
  if not isinstance(output, str) or not output:
    raise ArtifactError(f"{where}: output {output!r} is not an output's "
                        "name.")
  step = meta.get("step")
  if step is not None and (not is_int(step) or step < 0):
    raise ArtifactError(f"{where}: step {step!r} is neither a step number "
                        "nor null.")
  files = meta.get("files")
  if not isinstance(files, dict):
    raise ArtifactError(f"{where}: files is {json_kind(files)}, not an object "
                        "{name: sha256}.")
  for name, digest in files.items():
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
      raise ArtifactError(f"{where}: files[{quote(name)}] is "
                          f"{quote(digest)}, not a sha256 (64 lowercase hex "
                          "digits).")
  if VARIABLES not in files:
    raise ArtifactError(f"{where}: files does not list {VARIABLES}; its "
                        "sha256 is what makes the weights trustworthy.")


def _listed_parts(name: str, where: pathlib.Path) -> tuple[str, ...]:
  problem = untrusted.name_problem(name)
  if problem:
    raise ArtifactError(f"{where}: files names {quote(name)}, {problem}; "
                        "listed files lie inside the artifact.")
  return untrusted.name_parts(name)


# -- fetching ------------------------------------------------------------------


def fetch(source: str | os.PathLike, *, sha256: str | None = None,
          progress: bool = True, limits: Limits = LIMITS) -> pathlib.Path:
  """A local artifact directory for `source` (see the module docstring).

  Raises:
    ArtifactError: an unreadable URL or archive, a hostile archive, a sha256
      pin that is not 64 hex digits, on a directory, or that does not match.
    FileNotFoundError: a local path that does not exist.
  """
  text = str(source)
  url = urllib.parse.urlsplit(text)
  pin = None if sha256 is None else download.pin(sha256, source)
  if url.fragment.startswith("sha256="):
    fragment = download.pin(url.fragment[len("sha256="):], source)
    if pin is not None and pin != fragment:
      raise ArtifactError(f"{source}: pinned to sha256 {fragment} but also "
                          f"given sha256={pin}; give one.")
    pin = fragment
    text = text.split("#", 1)[0]
  if url.scheme in ("http", "https"):
    path = download.download(text, pin, progress, limits.max_bytes)
  else:
    path = pathlib.Path(urllib.parse.unquote(url.path) if url.scheme == "file"
                        else text).expanduser()
    if not path.exists():
      raise FileNotFoundError(f"No such model: {source}")
    if path.is_dir():
      if pin is not None:
        raise ArtifactError(
            f"{source} is a directory: a sha256 pin checks an archive's "
            "bytes. Pin the .tar.gz, or drop the pin (model.json's sha256 "
            "list checks a directory's files).")
      return path
    if not path.is_file():
      raise ArtifactError(f"{source} is neither a directory nor a regular "
                          "file.")
    if pin is not None:
      download.check_sha256(path, pin, source)
  return _extract(path, limits)


def _extract(path: pathlib.Path, limits: Limits) -> pathlib.Path:
  """The artifact inside the archive `path`, extracted once into the cache
  (by its sha256, so that a changed archive is extracted anew)."""
  if not path.name.endswith(archive.SUFFIXES):
    raise ArtifactError(f"{path} is neither an artifact directory nor an "
                        f"archive ({', '.join(archive.SUFFIXES)}).")
  target = cache_dir() / "models" / sha256_of(path)[:16]
  if not target.is_dir():
    target.parent.mkdir(parents=True, exist_ok=True)
    archive.extract(path, target,
                    budget=limits.extract_budget(path.stat().st_size),
                    max_members=limits.max_members)
  found = [p.parent for p in target.rglob(MODEL_JSON) if p.is_file()]
  if len(found) != 1:
    raise ArtifactError(f"{path} holds {len(found)} model.json files; an "
                        "artifact archive holds exactly one.")
  return found[0]
