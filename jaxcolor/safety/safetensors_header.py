"""A safetensors file's header, read and checked before safetensors parses it.

safetensors holds raw arrays and a JSON header: loading it never executes
code (unlike a pickle), but a lying header would ask the loader for an
allocation of its choosing or fail inside it with a message that names
nothing. `check` parses the header here first and names the entry at fault.
"""

import json
import math
import os
import pathlib
import struct
from typing import Sequence

from jaxcolor.core.errors import ArtifactError, error_line, quote
from jaxcolor.safety import untrusted

# The dtypes safetensors' numpy loader reads, and their sizes in bytes.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2,
               "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
               "C64": 8}


def check(path: pathlib.Path, max_header_bytes: int) -> None:
  """Raises ArtifactError unless `path`'s header is consistent with its file.

  Layout: an 8-byte little-endian header length, a JSON header {name:
  {dtype, shape, data_offsets: [begin, end]}} (plus an optional
  '__metadata__' of strings), then the data. Each entry's byte count must
  follow from its dtype and shape, and the entries must tile the data
  exactly, as safetensors itself requires.
  """
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
      raise ArtifactError(f"{path}: {size} bytes, too short for a "
                          "safetensors file.")
    length = struct.unpack("<Q", head)[0]
    if length > min(max_header_bytes, size - 8):
      raise ArtifactError(
          f"{path}: header length {length} is past the file's {size} bytes "
          f"or over the {max_header_bytes} a header may take.")
    try:
      header = json.loads(f.read(length))
    except (ValueError, RecursionError) as e:
      raise ArtifactError(f"{path}: header is not JSON: "
                          f"{error_line(e)}") from None
  if not isinstance(header, dict):
    raise ArtifactError(f"{path}: header is {untrusted.json_kind(header)}, "
                        "not an object.")
  data_size = size - 8 - length
  spans = []
  for key, entry in header.items():
    if key == "__metadata__":
      if not (isinstance(entry, dict) and all(isinstance(v, str)
                                              for v in entry.values())):
        raise ArtifactError(f"{path}: __metadata__ is not an object of "
                            "strings.")
      continue
    spans.append(_span(f"{path}: {quote(key)}", entry, data_size) + (key,))
  position = 0
  for begin, end, key in sorted(spans):
    if begin != position:
      raise ArtifactError(f"{path}: {quote(key)} starts at data byte {begin}"
                          f", not {position}: entries overlap or leave a gap.")
    position = end
  if position != data_size:
    raise ArtifactError(f"{path}: the entries end at data byte {position} of "
                        f"{data_size}.")


def _span(name: str, entry, data_size: int) -> tuple[int, int]:
  """(begin, end) of one header entry's data, its fields checked; `name`
  starts the messages."""
  if not isinstance(entry, dict):
    raise ArtifactError(f"{name} is {untrusted.json_kind(entry)}, not an "
                        "entry object.")
  dtype, shape = entry.get("dtype"), entry.get("shape")
  offsets = entry.get("data_offsets")
  if dtype not in DTYPE_BYTES:
    raise ArtifactError(f"{name} has dtype {quote(dtype)}, not one of "
                        f"{', '.join(DTYPE_BYTES)}.")
  if not (isinstance(shape, list)
          and all(untrusted.is_int(n) and n >= 0 for n in shape)):
    raise ArtifactError(f"{name} has shape {quote(shape)}, not a list of "
                        "non-negative integers.")
  if not (isinstance(offsets, list) and len(offsets) == 2
          and all(untrusted.is_int(n) for n in offsets)
          and 0 <= offsets[0] <= offsets[1] <= data_size):
    raise ArtifactError(f"{name} has data_offsets {quote(offsets)}, not "
                        f"[begin, end] within the file's {data_size} data "
                        "bytes.")
  needed = math.prod(shape) * DTYPE_BYTES[dtype]
  if offsets[1] - offsets[0] != needed:
    raise ArtifactError(
        f"{name}: shape {shape_text(shape)} of {dtype} takes {needed} "
        f"bytes, but its data_offsets span {offsets[1] - offsets[0]}.")
  return offsets[0], offsets[1]


def shape_text(shape: Sequence[int]) -> str:
  """(3,3,1,8): a shape as messages give it."""
  return "(" + ",".join(str(n) for n in shape) + ")"
