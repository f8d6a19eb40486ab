"""The errors a user is meant to read, and the helpers that word them.

The ground floor of the package: it imports nothing of jaxcolor, so every
module may raise `ConfigError` or `ArtifactError` without importing anything
above it.

Every error a job reports to its user is a `JobError`: the commands
(jaxcolor/runtime/job.py) print it as `<label>: <message>`, one line and no
traceback, and exit with its status. Anything else that escapes a job is a
fault of the code and keeps its traceback.
"""

import difflib
from typing import Any, Iterable


class JobError(Exception):
  """An error a job's user is meant to read: a bad value, file or state,
  named in one line. The commands print `<label>: <message>` and exit with
  `exit_status`."""
  label = "Error"
  exit_status = 2


class ConfigError(JobError, ValueError):
  """A configuration value that cannot work; the message names the key."""
  label = "Configuration error"


class ArtifactError(JobError, ValueError):
  """Not an artifact, a newer format, a file that fails its sha256, a
  truncated or mismatched download, a hostile archive or model.json; the
  message (one line) names the file, key or member."""


def suggest(name: str, candidates: Iterable[str]) -> str:
  """' (did you mean X?)' for the closest candidate, or ''."""
  close = difflib.get_close_matches(name, list(candidates), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


def require(condition: bool, key: str, value: Any, allowed: str) -> None:
  """ConfigError 'config.<key>=<value> is invalid: <allowed>.' unless
  `condition`."""
  if not condition:
    raise ConfigError(f"config.{key}={value!r} is invalid: {allowed}.")


def quote(value: Any, limit: int = 120) -> str:
  """repr(value) cut to `limit` characters: one line, whatever a hostile
  name holds."""
  text = repr(value)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def error_line(error: BaseException) -> str:
  """An exception as one line: its message's first line, with its type where
  the message alone would be a bare key or number."""
  lines = str(error).strip().splitlines()
  text = lines[0] if lines else ""
  if isinstance(error, (KeyError, IndexError, AttributeError, TypeError)) \
      or not text:
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
  return text
