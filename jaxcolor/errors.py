"""The errors a user is meant to read, and the helper that words them.

The ground floor of the package: it imports nothing of jaxcolor, so every
module may raise `ConfigError` without importing anything above it.
"""

import difflib
from typing import Any, Iterable


class ConfigError(ValueError):
  """A configuration value that cannot work; the message names the key.

  The entry points print it as one line, without a traceback, and exit 2.
  """


def suggest(name: str, candidates: Iterable[str]) -> str:
  """' (did you mean X?)' for the closest candidate, or ''."""
  close = difflib.get_close_matches(name, list(candidates), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


def require(condition: bool, key: str, value: Any, allowed: str) -> None:
  """ConfigError 'config.<key>=<value> is invalid: <allowed>.' unless
  `condition`."""
  if not condition:
    raise ConfigError(f"config.{key}={value!r} is invalid: {allowed}.")
