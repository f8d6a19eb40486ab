"""Files in and out of the colorizer: which inputs, where the outputs go,
decoding files, writing them atomically, and the pipelined loop over them.

Inputs are image files and folders of images (`find_inputs`); each photo's
output path keeps its name and subfolders under the output folder
(`output_path`). Nothing is ever written over an input, nor among an input
folder's photos (`check_output`, before anything is read). Files are
decoded as training decodes them (`load_image`; `REFUSALS` says in plain
words why one is refused) and written under a hidden name, then renamed,
so no file is ever half-written (`save_image`). `colorize_files` overlaps
decoding, the network and encoding. What is done to the pixels between
decoding and writing is jaxcolor/inference/rendering.py.
"""

import collections
import concurrent.futures
import errno
import os
import pathlib
import secrets
import threading
import time
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from jaxcolor.core.errors import JobError
from jaxcolor.data import sources
from jaxcolor.data import transforms
from jaxcolor.inference import rendering

FORMATS = {"png": ".png", "jpeg": ".jpg"}


class OutputError(JobError, ValueError):
  """An output folder that is a file, or would write over an input or mix
  with an input folder; raised before anything is read or written."""


def output_path(output: str | os.PathLike, name: pathlib.Path,
                file_format: str) -> pathlib.Path:
  """Where the photo `name` (`find_inputs`' second item) is written."""
  return pathlib.Path(output).expanduser() / name.with_name(
      name.name + FORMATS[file_format])


def check_output(output: str | os.PathLike, inputs: Iterable[str],
                 planned: Iterable[tuple[pathlib.Path, pathlib.Path]]) -> None:
  """Refuses an output that would destroy an input or mix with the inputs.

  Args:
    output: the output folder (it need not exist).
    inputs: the input files and folders, as given.
    planned: (input file, output path) for every file to be written.

  Raises:
    OutputError: `output` exists and is not a folder; it is an input folder
      or lies inside one, or an output path does (colorized files would sit
      among the photos, and a second run would take them for photos); an
      output path is an input file (the same path once links are resolved,
      or the same file); two inputs would be written to one path.
  """
  folder = pathlib.Path(output).expanduser()
  if os.path.lexists(folder) and not folder.is_dir():
    raise OutputError(f"--output {output} is a file; give a folder.")
  where = folder.resolve()
  sources = [(pathlib.Path(item).expanduser(), item) for item in inputs]
  input_folders = {path.resolve(): item for path, item in sources
                   if path.is_dir()}
  mixing = ("the colorized files would mix with its photos (and a second run "
            "would take them for photos); give a folder outside it.")
  for inside in (where, *where.parents):
    if inside in input_folders:
      relation = "is" if inside == where else "is inside"
      raise OutputError(f"--output {output} {relation} the input folder "
                        f"{input_folders[inside]}: {mixing}")
  planned = list(planned)
  by_path = {file.resolve(): file for file, _ in planned}
  by_identity = {_identity(file): file for file, _ in planned}
  by_identity.pop(None, None)
  writers: dict[pathlib.Path, pathlib.Path] = {}
  for file, target in planned:
    resolved = target.resolve()
    # An input folder below --output (photos/photos/ given with --output .).
    container = next((input_folders[parent] for parent in resolved.parents
                      if parent in input_folders), None)
    if container is not None:
      raise OutputError(f"--output {output} would write {target} inside the "
                        f"input folder {container}: {mixing}")
    # The identity catches what paths do not: a hard link, or another
    # spelling of the name on a case-insensitive file system.
    victim = by_path.get(resolved) or by_identity.get(_identity(target))
    if victim is not None:
      raise OutputError(f"--output {output} would write {target} over the "
                        f"input {victim}; give another folder.")
    if resolved in writers:
      raise OutputError(f"{writers[resolved]} and {file} would both be "
                        f"written to {target}; colorize them in separate "
                        "runs.")
    writers[resolved] = file


def _identity(path: pathlib.Path) -> tuple[int, int] | None:
  """(device, inode) of the file at `path`, or None where there is none."""
  try:
    stat = path.stat()
  except OSError:
    return None
  return (stat.st_dev, stat.st_ino)


def find_inputs(inputs: Iterable[str]) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """(file, output path relative to OUTPUT without suffix) for each input.

  A file keeps its stem; a folder's images keep their subfolders. When two
  inputs would share an output name (photo.jpg and photo.png), each of them
  gets its extension in the name (photo_jpg, photo_png).
  """
  found = []
  for item in inputs:
    path = pathlib.Path(item).expanduser()
    if path.is_dir():
      for relative in sources.list_images(path):
        relative = pathlib.Path(relative)
        found.append((path / relative, relative.with_suffix("")))
    elif path.is_file():
      found.append((path, pathlib.Path(path.stem)))
    else:
      raise FileNotFoundError(f"No such file or folder: {item}")
  seen_files, distinct = set(), []
  for file, name in found:  # A file named twice (itself and its folder).
    if file.resolve() not in seen_files:
      seen_files.add(file.resolve())
      distinct.append((file, name))
  counts: dict[pathlib.Path, int] = {}
  for _, name in distinct:
    counts[name] = counts.get(name, 0) + 1
  unique, taken = [], set()
  for file, name in distinct:
    if counts[name] > 1:
      name = name.with_name(f"{name.name}_{file.suffix.lstrip('.').lower()}")
    base, number = name, 2
    while name in taken:  # Same stem and extension in different inputs.
      name, number = base.with_name(f"{base.name}_{number}"), number + 1
    taken.add(name)
    unique.append((file, name))
  return unique


# Why `transforms.decode` refused a file (its last event), as a sentence:
# public, so the web app refuses an upload in the same words.
REFUSALS = {
    "unreadable": "cannot be read",
    "empty": "an empty file",
    "not_an_image": "not an image Pillow can read",
    "too_large": (f"over {transforms.MAX_IMAGE_PIXELS:,} pixels, more than "
                  "is decoded"),
    "extreme_aspect": (f"longer than {transforms.MAX_ASPECT_RATIO} times its "
                       "width or height, which is not colorized"),
    "corrupt": "a damaged or truncated image",
}


class UnusableImageError(ValueError):
  """A file that is not an image that can be colorized.

  `reason` says why in plain words ('not an image Pillow can read'); the
  message adds the file.
  """

  def __init__(self, path: pathlib.Path, reason: str):
    super().__init__(f"{path}: {reason}")
    self.reason = reason


def load_image(path: pathlib.Path) -> Image.Image:
  """Decodes a file as training does (EXIF, CMYK, 16-bit, alpha, palette).

  Raises:
    UnusableImageError: not an image, damaged, empty, too large.
    OSError: the file cannot be read.
  """
  image, events = transforms.decode(path.read_bytes())
  if image is None:
    raise UnusableImageError(path, REFUSALS.get(events[-1], events[-1]))
  return image


def save_image(rgb: np.ndarray, path: pathlib.Path, file_format: str,
               jpeg_quality: int = 95, *, overwrite: bool = True) -> None:
  """uint8 RGB -> `path`, written aside and renamed (never half-written).

  The file is written under a fresh hidden name beside `path` (no other
  file is touched). With `overwrite` False it is put in place with a hard
  link, which fails where the name is taken, so a file that appeared since
  the caller checked is kept too.

  Raises:
    FileExistsError: `overwrite` is False and `path` exists; nothing is
      written.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(rgb)
  handle, temporary = _create_beside(path)
  try:
    with os.fdopen(handle, "wb") as f:
      if file_format == "jpeg":
        image.save(f, format="JPEG", quality=jpeg_quality)
      else:
        image.save(f, format="PNG",
                   compress_level=rendering.PNG_COMPRESS_LEVEL)
    if overwrite:
      temporary.replace(path)
      return
    try:
      os.link(temporary, path)
    except FileExistsError:
      raise
    except OSError:  # No hard links on this file system (FAT, some mounts).
      if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
      temporary.replace(path)
  finally:
    temporary.unlink(missing_ok=True)


def _create_beside(path: pathlib.Path) -> tuple[int, pathlib.Path]:
  """A new hidden file beside `path`: (descriptor, path). Created with
  O_EXCL under a random name, so an existing file is never opened; with the
  umask's permissions, as `open` gives (mkstemp's are owner-only)."""
  while True:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
      return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o666), temporary
    except FileExistsError:
      continue


def default_threads() -> int:
  """`colorize_files`' host threads when not given: the cores, at most 8."""
  return max(1, min(8, os.cpu_count() or 1))


def colorize_files(colorizer, inputs: Sequence[str], output: str, *,
                   file_format: str = "png", jpeg_quality: int = 95,
                   progress: bool = True, threads: int | None = None,
                   overwrite: bool = True) -> dict[str, Any]:
  """Colorizes every input file or folder into `output` with `colorizer`
  (a `jaxcolor.colorize.Colorizer`), its batch at a time.

  A pipeline: `threads` host threads (default: the machine's cores, at most
  8) decode the next batch while the network runs on this one, and
  recombine and encode the previous batch's photos; at most two batches of
  photos wait to be written, so memory stays bounded on any number of files.

  No input is ever written over (`check_output`). An output file that
  exists already is replaced with `overwrite` (as a notebook that runs a
  cell again expects), else kept and its photo skipped, not decoded (the
  command line keeps them unless given `--overwrite`).

  Returns:
    {'written': [paths], 'failed': {input path: reason}, 'skipped': [output
     paths that existed], 'seconds': {stage: host seconds summed over
     threads}} with the stages 'decode', 'network' (resize, the device's
     work and the copy back) and 'write' (a*b* upsampling, recombination
     and encoding).

  Raises:
    OutputError: an `output` that `check_output` refuses; nothing is
      written.
  """
  if file_format not in FORMATS:
    raise ValueError(f"file_format={file_format!r}: one of {', '.join(FORMATS)}.")

  planned = [(file, output_path(output, name, file_format))
             for file, name in find_inputs(inputs)]
  check_output(output, inputs, planned)
  written, failed, skipped = [], {}, []
  jobs = []
  for file, target in planned:
    if target.is_dir() and not target.is_symlink():
      failed[str(file)] = f"its output {target} is a folder"
    elif not overwrite and os.path.lexists(target):
      skipped.append(str(target))
    else:
      jobs.append((file, target))
  seconds = {"decode": 0.0, "network": 0.0, "write": 0.0}
  lock = threading.Lock()
  bar = tqdm(total=len(jobs), unit="image", disable=not (progress and jobs))

  def timed(stage, fn, *args):
    start = time.perf_counter()
    try:
      return fn(*args)
    finally:
      with lock:
        seconds[stage] += time.perf_counter() - start

  def write(image, ab, target):
    save_image(colorizer.recombine(image, ab), target, file_format, jpeg_quality,
               overwrite=overwrite)

  def finish(writes):
    for target, future in writes:
      try:
        future.result()  # A failed write (disk full) stops the run.
      except FileExistsError:  # Written by someone else since planned.
        skipped.append(str(target))
      else:
        written.append(str(target))
      bar.update(1)

  batches = [jobs[i:i + colorizer.batch_size]
             for i in range(0, len(jobs), colorizer.batch_size)]
  workers = threads or default_threads()
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    def decode(batch):
      return [(file, target, pool.submit(timed, "decode", load_image, file))
              for file, target in batch]

    pending_writes: collections.deque = collections.deque()
    decoding = decode(batches[0]) if batches else []
    for index in range(len(batches)):
      current = decoding
      decoding = decode(batches[index + 1]) if index + 1 < len(batches) else []
      batch = []
      for file, target, future in current:
        try:
          batch.append((file, target, future.result()))
        except (OSError, ValueError) as e:
          failed[str(file)] = _reason(e)
          bar.update(1)
      if not batch:
        continue
      abs_ = timed("network", colorizer.predict_ab,
                   [image for _, _, image in batch])
      writes = []
      for (_, target, image), ab in zip(batch, abs_):
        writes.append((target, pool.submit(timed, "write", write, image, ab,
                                           target)))
      pending_writes.append(writes)
      while len(pending_writes) > 2:
        finish(pending_writes.popleft())
    while pending_writes:
      finish(pending_writes.popleft())
  bar.close()
  return {"written": written, "failed": failed, "skipped": skipped,
          "seconds": seconds}


def _reason(error: Exception) -> str:
  """Why a file was not colorized, in words, without its path (the caller
  names it)."""
  if isinstance(error, UnusableImageError):
    return error.reason
  if isinstance(error, OSError) and error.strerror:
    return f"cannot be read ({error.strerror.lower()})"
  return str(error)
