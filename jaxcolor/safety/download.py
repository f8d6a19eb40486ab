"""HTTP(S) downloads into the cache, resumable and pinned by sha256.

A download goes to CACHE/downloads/KEY/NAME (CACHE: `cache_dir()`, from
JAXCOLOR_CACHE, default ~/.cache/jaxcolor; KEY: the URL's hash; NAME: its
file name where that is a plain one), through NAME.partial renamed when
complete. It resumes where a previous one stopped (HTTP Range), shows a
progress bar, stops past the caller's byte ceiling, and is checked against
a sha256 pin (`pin`: 64 hex digits, compared whole).

The cache is safe for concurrent processes: a download holds an exclusive
`flock` on a lock file beside its target, and a process that waited finds
the file done. A complete `.partial` left by a kill, which the server
answers with 416 (nothing past its end), counts as done.
"""

import fcntl
import hashlib
import os
import pathlib
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tqdm import tqdm

from jaxcolor.core.errors import ArtifactError, quote
from jaxcolor.safety import untrusted


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get(
      "JAXCOLOR_CACHE", pathlib.Path.home() / ".cache" / "jaxcolor"))


def pin(value: Any, source) -> str:
  """A sha256 pin, lowercased: exactly 64 hex digits, since a prefix would
  pin nothing (an empty one matches every file)."""
  if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}",
                                                    value):
    raise ArtifactError(f"{source}: sha256 pin {quote(value)} is not 64 "
                        "hexadecimal digits (the whole digest).")
  return value.lower()


def check_sha256(path: pathlib.Path, expected: str, source) -> None:
  """Raises ArtifactError unless `path` has the sha256 `expected` (a pin)."""
  actual = untrusted.sha256_of(path)
  if actual != expected:
    raise ArtifactError(f"{source}: sha256 {actual}, expected {expected} "
                        "(a truncated or different file).")


def download(url: str, sha256: str | None, progress: bool,
             max_bytes: int) -> pathlib.Path:
  """The file at `url` in the cache, downloaded once, resumed if cut.

  Concurrent processes take turns on an exclusive flock beside the target;
  the one that waited finds the file done and uses it.

  Raises:
    ArtifactError: the server refused or the connection failed (rerun to
      resume), over `max_bytes`, or not the pinned `sha256`.
  """
  name = _download_name(url)
  key = hashlib.sha256(url.encode()).hexdigest()[:16]
  target = cache_dir() / "downloads" / key / name
  if not target.is_file():
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "ab") as lock:
      fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # Released on close.
      if not target.is_file():
        _download_locked(url, target, sha256, progress, max_bytes)
        return target
  if sha256:
    check_sha256(target, sha256, url)
  return target


def _download_name(url: str) -> str:
  """The URL's file name if it is a plain one (no '..', no odd characters),
  else 'model': it becomes a path in the cache."""
  name = pathlib.PurePosixPath(urllib.parse.urlsplit(url).path).name
  return name if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name) \
      else "model"


def _download_locked(url: str, target: pathlib.Path, sha256: str | None,
                     progress: bool, max_bytes: int) -> None:
  partial = target.with_name(target.name + ".partial")
  have = partial.stat().st_size if partial.exists() else 0
  request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"}
                                   if have else {})
  total = None
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      if have and response.status != 206:  # The server ignored the range.
        have = 0
      total = response.headers.get("Content-Length")
      total = int(total) + have if total is not None else None
      if total is not None and total > max_bytes:
        raise ArtifactError(f"{url}: {total} bytes, over the "
                            f"{max_bytes} an artifact may take.")
      with open(partial, "ab" if have else "wb") as f, tqdm(
          total=total, initial=have, unit="B", unit_scale=True,
          desc=target.name, disable=not progress) as bar:
        for chunk in iter(lambda: response.read(untrusted.CHUNK), b""):
          if f.tell() + len(chunk) > max_bytes:
            raise ArtifactError(f"{url}: past {max_bytes} bytes, "
                                "more than an artifact may take.")
          f.write(chunk)
          bar.update(len(chunk))
  except urllib.error.HTTPError as e:
    e.close()
    if not (e.code == 416 and have):
      raise ArtifactError(f"Cannot download {url}: {e} (rerun to resume; "
                          f"{have} bytes so far).") from None
    # Nothing past `have`: a kill between the last byte and the rename left
    # the whole file as .partial. Unless the server says the file is
    # another size.
    sizes = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range")
                         or "")
    if sizes and int(sizes[1]) != have:
      partial.unlink()
      raise ArtifactError(f"{url}: {have} bytes saved, but the file now has "
                          f"{sizes[1]}; rerun to download it again.") from None
    total = have
  except ArtifactError:
    partial.unlink(missing_ok=True)
    raise
  except OSError as e:  # URLError, timeouts, disk errors.
    raise ArtifactError(f"Cannot download {url}: {e} (rerun to resume; "
                        f"{partial.stat().st_size if partial.exists() else 0}"
                        " bytes so far).") from None
  if total is not None and partial.stat().st_size != total:
    raise ArtifactError(f"{url}: download stopped at "
                        f"{partial.stat().st_size} of {total} bytes; rerun to "
                        "resume.")
  if sha256:
    try:
      check_sha256(partial, sha256, url)
    except ArtifactError:
      partial.unlink()  # Not resumable: the bytes themselves are wrong.
      raise
  partial.rename(target)
