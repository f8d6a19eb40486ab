"""Reading files a user hands over without trusting them.

What the artifact reader (jaxcolor/inference/artifact.py), the archive extractor
(jaxcolor/safety/archive.py) and the downloader (jaxcolor/safety/download.py) share:

- names that must stay inside a folder (an archive's members, the files a
  model.json lists): '/'-separated and relative, without `..` parts, drive
  letters, NUL or backslash (`name_problem`, `name_parts`);
- files opened without following links, checked on their descriptor, so
  that what is hashed is what was checked (`open_regular`, `file_kind`);
- JSON values told apart by kind for one-line messages (`json_kind`), and
  integers that are not booleans (`is_int`: Python counts `true` as 1);
- a file's sha256, read in chunks (`sha256_of`);
- folders made readable by anyone, whatever the umask (`set_public_modes`):
  an extracted archive is shared by every process using the cache, and an
  exported artifact is meant to be handed on.

Every refusal is an `ArtifactError` (jaxcolor/core/errors.py) of one line.
"""

import hashlib
import os
import pathlib
import re
import stat
from typing import Any, BinaryIO

from jaxcolor.core.errors import ArtifactError, error_line

CHUNK = 1 << 20


def sha256_of(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def set_public_modes(root: str | os.PathLike) -> None:
  """Directories 0755 and files 0644 under (and including) `root`."""
  os.chmod(root, 0o755)
  for parent, dirs, files in os.walk(root):
    for name in dirs:
      os.chmod(os.path.join(parent, name), 0o755)
    for name in files:
      os.chmod(os.path.join(parent, name), 0o644)


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def json_kind(value: Any) -> str:
  """'an object', 'a list', ...: what a JSON value is, for a message."""
  return {dict: "an object", list: "a list", str: "a string",
          type(None): "null", bool: "a boolean"}.get(type(value),
                                                    type(value).__name__)


# -- names inside a folder -----------------------------------------------------


_DRIVE = re.compile(r"[A-Za-z]:")


def name_problem(name: Any) -> str | None:
  """Why `name` cannot name something inside a folder, or None.

  A name is '/'-separated and relative; '.' and empty parts are dropped (an
  archive of `tar -C DIR .` holds './model.json').
  """
  if not isinstance(name, str) or not name:
    return "not a file name"
  if "\0" in name or "\\" in name:
    return "a name with a NUL or backslash"
  if name.startswith("/"):
    return "an absolute name"
  if _DRIVE.match(name):
    return "a name with a drive letter"
  if ".." in name.split("/"):
    return "a name with a '..' part"
  if not name_parts(name):
    return "a name of no file"
  return None


def name_parts(name: str) -> tuple[str, ...]:
  """('a', 'b') for 'a/b', './a//b' or 'a/b/'."""
  return tuple(p for p in name.split("/") if p not in ("", "."))


def inside(root: str, path: str) -> bool:
  """Whether `path`, links resolved, is `root` (a real path) or under it."""
  real = os.path.realpath(path)
  return real == root or real.startswith(root + os.sep)


# -- files without links -------------------------------------------------------


def open_regular(directory: pathlib.Path, parts: tuple[str, ...],
                 where: pathlib.Path) -> BinaryIO:
  """`directory/parts` opened for reading, refusing links and non-files.

  Each component is looked at without following links (a link could point
  anywhere), and the file is opened with O_NOFOLLOW and checked on its
  descriptor, so what is hashed is what was checked. `where`: the file that
  names this one (model.json), for the message.
  """
  path = directory
  for part in parts[:-1]:
    path = path / part
    try:
      mode = os.lstat(path).st_mode
    except FileNotFoundError:
      raise ArtifactError(f"{directory / '/'.join(parts)} is missing from "
                          "the artifact.") from None
    if not stat.S_ISDIR(mode):
      raise ArtifactError(f"{path} is {file_kind(mode)}, on the way to "
                          f"{'/'.join(parts)} that {where.name} lists; an "
                          "artifact holds no links or special files.")
  path = directory.joinpath(*parts)
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
  except FileNotFoundError:
    raise ArtifactError(f"{path} is missing from the artifact.") from None
  except OSError as e:  # ELOOP: the last component is a link.
    kind = file_kind(os.lstat(path).st_mode) if os.path.lexists(path) else ""
    raise ArtifactError(f"{path} is {kind or error_line(e)}, not a regular "
                        "file; an artifact holds no links or special "
                        "files.") from None
  mode = os.fstat(fd).st_mode
  if not stat.S_ISREG(mode):
    os.close(fd)
    raise ArtifactError(f"{path} is {file_kind(mode)}, not a regular file; "
                        "an artifact holds no links or special files.")
  os.set_blocking(fd, True)
  return os.fdopen(fd, "rb")


def file_kind(mode: int) -> str:
  """'a symbolic link', 'a fifo', ...: what `mode` (st_mode) is."""
  for test, kind in ((stat.S_ISLNK, "a symbolic link"),
                     (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a fifo"),
                     (stat.S_ISCHR, "a character device"),
                     (stat.S_ISBLK, "a block device"),
                     (stat.S_ISSOCK, "a socket")):
    if test(mode):
      return kind
  return "a regular file" if stat.S_ISREG(mode) else "a special file"
