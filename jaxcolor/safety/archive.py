"""Archives (.tar.gz, .tgz, .tar, .zip) extracted without trusting them.

Archives never reach `extractall`: its `filter="data"` is bypassed on
Python 3.11.4 to 3.11.12 (CVE-2025-4517: symlinks whose resolution escapes
past PATH_MAX). Every member is checked before anything is written (regular
files and directories only; names relative, without `..` parts or drive
letters; no duplicates; no sparse or encrypted members), then `extract`
writes them itself, refusing to follow or create links.

The bytes written are bounded by a budget the caller sets
(`artifact.Limits.extract_budget`), counted on the decompressed stream while
it is read: declared sizes are not trusted, and tarfile reads pax and
long-name headers whole, so the bound holds beneath tarfile too.
"""

import bz2
import gzip
import lzma
import os
import pathlib
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from typing import BinaryIO, Callable, NamedTuple

from jaxcolor.core.errors import ArtifactError, error_line, quote
from jaxcolor.safety import untrusted

SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def extract(archive: pathlib.Path, target: pathlib.Path, *, budget: int,
            max_members: int) -> None:
  """Extracts `archive` to `target`: at most `max_members` members and
  `budget` bytes.

  The members are written into a private staging folder beside `target`
  and renamed into place, so that concurrent processes never see half an
  extraction: the first to finish wins, the others use its copy.

  Raises:
    ArtifactError: a hostile or unreadable archive, naming the member.
  """
  staging = pathlib.Path(tempfile.mkdtemp(prefix=".extracting.",
                                          dir=target.parent))
  try:
    if archive.name.endswith(".zip"):
      with zipfile.ZipFile(archive) as z:
        members = _checked_names(_zip_members(z, archive, max_members,
                                              budget), archive)
        _write_members(members, staging, budget, archive)
    else:
      with _open_tar_stream(archive) as raw, tarfile.open(
          fileobj=_Bounded(raw, budget, archive), mode="r:") as t:
        members = _checked_names(_tar_members(t, archive, max_members,
                                              budget), archive)
        _write_members(members, staging, budget, archive)
    untrusted.set_public_modes(staging)
    try:
      os.rename(staging, target)
    except OSError:
      if not target.is_dir():
        raise
      # Another process extracted the same archive first: use its copy.
      shutil.rmtree(staging, ignore_errors=True)
  except ArtifactError:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  except (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
          EOFError, OSError, ValueError, struct.error, NotImplementedError,
          RuntimeError) as e:
    shutil.rmtree(staging, ignore_errors=True)
    raise ArtifactError(f"{archive}: not a readable archive "
                        f"({error_line(e)}).") from None
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


class _Member(NamedTuple):
  """An archive member that passed the checks."""
  name: str
  parts: tuple[str, ...]
  is_dir: bool
  open: Callable[[], BinaryIO] | None


class _TooLarge(ArtifactError):
  """An archive past its extraction budget."""


class _Bounded:
  """A decompressed tar stream that will not go past `limit` bytes.

  tarfile skips members by seeking (which decompresses) and reads pax and
  long-name headers whole into memory, so the budget has to hold beneath
  it, on the stream itself, rather than on the sizes members declare.
  """

  def __init__(self, raw: BinaryIO, limit: int, archive: pathlib.Path):
    self._raw, self._limit, self._archive = raw, limit, archive

  def _over(self) -> _TooLarge:
    return _TooLarge(f"{self._archive}: decompresses past {self._limit} "
                     "bytes, over the limit for an archive of its size (a "
                     "decompression bomb?).")

  def read(self, size: int | None = -1) -> bytes:
    room = self._limit - self._raw.tell()
    want = room + 1 if size is None or size < 0 else min(size, room + 1)
    data = self._raw.read(max(want, 0))
    if len(data) > room:
      raise self._over()
    return data

  def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
    if whence == os.SEEK_SET and offset > self._limit:
      raise self._over()
    position = self._raw.seek(offset, whence)
    if position > self._limit:
      raise self._over()
    return position

  def tell(self) -> int:
    return self._raw.tell()


def _open_tar_stream(archive: pathlib.Path) -> BinaryIO:
  """The archive's tar stream, decompressed by its magic bytes (a .tar may
  be compressed, a .tar.gz may not be)."""
  with open(archive, "rb") as f:
    magic = f.read(6)
  if magic.startswith(b"\x1f\x8b"):
    return gzip.GzipFile(archive, "rb")
  if magic.startswith(b"BZh"):
    return bz2.BZ2File(archive, "rb")
  if magic.startswith(b"\xfd7zXZ\x00"):
    return lzma.LZMAFile(archive, "rb")
  return open(archive, "rb")


def _declared(total: int, size: int, name: str, budget: int,
              archive: pathlib.Path) -> int:
  """`total` + a member's declared `size`, refused past `budget`: a bomb is
  refused by its header before a byte of it is inflated."""
  total += size
  if total > budget:
    raise _TooLarge(f"{archive}: members declare {total} bytes by "
                    f"{quote(name)}, over the {budget} an archive of its "
                    "size may extract to.")
  return total


_TAR_KINDS = {tarfile.SYMTYPE: "a symbolic link",
              tarfile.LNKTYPE: "a hard link",
              tarfile.CHRTYPE: "a character device",
              tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a fifo"}


def _tar_members(t: tarfile.TarFile, archive: pathlib.Path, max_members: int,
                 budget: int) -> list[_Member]:
  members, declared = [], 0
  for info in t:
    if len(members) == max_members:
      raise ArtifactError(f"{archive}: more than {max_members} members; an "
                          "artifact holds a few files.")
    if info.issparse():
      kind = "a sparse file"
    elif info.isreg() or info.isdir():
      kind = None
    else:
      kind = _TAR_KINDS.get(info.type, f"of tar type {info.type!r}")
    if kind:
      raise ArtifactError(f"{archive}: member {quote(info.name)} is {kind}; "
                          "an artifact holds regular files and directories "
                          "only.")
    declared = _declared(declared, info.size if info.isreg() else 0,
                         info.name, budget, archive)
    members.append(_Member(info.name, (), info.isdir(),
                           None if info.isdir() else
                           (lambda info=info: t.extractfile(info))))
  return members


def _zip_members(z: zipfile.ZipFile, archive: pathlib.Path, max_members: int,
                 budget: int) -> list[_Member]:
  infos = z.infolist()
  if len(infos) > max_members:
    raise ArtifactError(f"{archive}: {len(infos)} members, more than "
                        f"{max_members}; an artifact holds a few files.")
  members, declared = [], 0
  for info in infos:
    # Unix mode bits, where the zip was made on Unix: links are stored as
    # files holding their target, with S_IFLNK here.
    mode = info.external_attr >> 16
    allowed = (0, stat.S_IFDIR) if info.is_dir() else (0, stat.S_IFREG)
    if stat.S_IFMT(mode) not in allowed:
      raise ArtifactError(f"{archive}: member {quote(info.filename)} is "
                          f"{untrusted.file_kind(mode)}; an artifact holds "
                          "regular files and directories only.")
    if info.flag_bits & 0x1:
      raise ArtifactError(f"{archive}: member {quote(info.filename)} is "
                          "encrypted.")
    declared = _declared(declared, info.file_size, info.filename, budget,
                         archive)
    members.append(_Member(info.filename, (), info.is_dir(),
                           None if info.is_dir() else
                           (lambda info=info: z.open(info))))
  return members


def _checked_names(members: list[_Member], archive: pathlib.Path
                   ) -> list[_Member]:
  """`members` with their parts, each name checked: relative, no '..', no
  duplicate file, nothing under a file."""
  checked, files, dirs = [], set(), set()
  for member in members:
    problem = untrusted.name_problem(member.name)
    if problem == "a name of no file" and member.is_dir:
      continue  # './': the folder itself.
    if problem:
      raise ArtifactError(f"{archive}: member {quote(member.name)} has "
                          f"{problem}; members lie inside the archive's "
                          "folder.")
    parts = untrusted.name_parts(member.name)
    above = {parts[:i] for i in range(1, len(parts))}
    if parts in files or (not member.is_dir and parts in dirs) \
        or above & files:
      raise ArtifactError(f"{archive}: member {quote(member.name)} clashes "
                          "with another member of the same path.")
    (dirs if member.is_dir else files).add(parts)
    dirs.update(above)
    checked.append(member._replace(parts=parts))
  return checked


def _write_members(members: list[_Member], destination: pathlib.Path,
                   budget: int, archive: pathlib.Path) -> None:
  """The checked members written under `destination`, at most `budget` bytes
  counted as they stream (not as declared)."""
  root = os.path.realpath(destination)
  left = budget
  for member in members:
    path = os.path.join(root, *member.parts)
    # Belt and braces: the names were checked and nothing here is a link.
    if not untrusted.inside(root, path):
      raise ArtifactError(f"{archive}: member {quote(member.name)} resolves "
                          "outside the extraction folder.")
    if member.is_dir:
      os.makedirs(path, exist_ok=True)
      continue
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path,
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out, member.open() as source:
      while chunk := source.read(min(untrusted.CHUNK, left + 1)):
        if len(chunk) > left:
          raise _TooLarge(f"{archive}: extracts past {budget} bytes at "
                          f"{quote(member.name)}, over the limit for an "
                          "archive of its size (a decompression bomb?).")
        left -= len(chunk)
        out.write(chunk)
