"""`--config FILE[:preset]` and `--config.FIELD=VALUE`: the jobs' config,
loaded and overridden here, with every error worded here.

A config file is a Python file whose `get_config(arg)` returns an
`ml_collections.ConfigDict` (configs/); `FILE:ARG` passes ARG, the presets
(`configs/default.py:smoke`). An override names a field that the file's
config has (`--config.batch_size=32`, `--config.generator.ngf=32`) and
gives a value of that field's type; `--config.FIELD VALUE` works too.

absl never sees the overrides: `split_overrides` takes them out of the
command line before absl parses it (they are not absl flags, and a field
the file lacks is our error to word, not absl's), and `load` applies them
to the file's config. Every failure is a `ConfigError` naming the file,
field or value, which the jobs print as one line (jaxcolor/runtime/job.py).
The config that `load` returns is locked: a field that is not there cannot
be added later by mistake.
"""

import ast
import importlib.util
import os
import traceback
from typing import Any, Sequence

import ml_collections
from absl import flags

from jaxcolor.core.errors import ConfigError, quote, suggest

PREFIX = "--config."


def define_flag() -> None:
  """absl's `--config` flag: the file (and preset) only; `load` reads it."""
  flags.DEFINE_string(
      "config", None, "Config file, optionally with a preset: "
      "configs/pix2pix.py:smoke. --config.FIELD=VALUE sets a field "
      "(--config.batch_size=32, --config.generator.ngf=32).")


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(argv without the overrides, [(field, value text), ...] in order).

  The program name stays first; nothing after a bare '--' is taken.

  Raises:
    ConfigError: an override without a value ('--config.batch_size' last).
  """
  rest, overrides = [], []
  args = list(argv)
  k = 0
  while k < len(args):
    arg = args[k]
    if arg == "--":
      rest += args[k:]
      break
    if k > 0 and (arg.startswith(PREFIX) or arg.startswith("-config.")):
      name = arg[arg.index("config.") + len("config."):]
      if "=" in name:
        field, _, text = name.partition("=")
      elif k + 1 < len(args):
        field, text = name, args[k + 1]
        k += 1
      else:
        raise ConfigError(f"{PREFIX}{name} needs a value: "
                          f"{PREFIX}{name}=VALUE.")
      overrides.append((field, text))
    else:
      rest.append(arg)
    k += 1
  return rest, overrides


def load(spec: str, overrides: Sequence[tuple[str, str]] = ()
         ) -> ml_collections.ConfigDict:
  """The config of `spec` ('FILE' or 'FILE:ARG'), overridden and locked.

  Raises:
    ConfigError: the file is missing or is not a config file, its
      `get_config` raised (its message, with the file and line), a field is
      unknown (with the closest name) or a value is not of its field's type.
  """
  path, _, arg = spec.partition(":")
  config = _call_get_config(path, arg or None)
  for field, text in overrides:
    set_field(config, field, text)
  config.lock()
  return config


def _call_get_config(path: str, arg: str | None) -> ml_collections.ConfigDict:
  if not os.path.isfile(path):
    raise ConfigError(f"Cannot load the config file {path}: "
                      + ("it is a folder." if os.path.isdir(path)
                         else "no such file."))
  name = "jaxcolor_config_" + os.path.basename(path).removesuffix(".py")
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"Cannot load the config file {path}: not a Python "
                      "file.")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
      raise ConfigError(f"Cannot load the config file {path}: it defines "
                        "no get_config().")
    config = get_config(arg) if arg is not None else get_config()
  except ConfigError as e:  # A config's own check, e.g. an unknown preset.
    message = str(e)
    raise ConfigError(message if path in message
                      else f"{path}: {message}") from None
  except Exception as e:  # The user's file: its fault, said with its line.
    raise ConfigError(f"{path}{_line_in(e, path)}: "
                      f"{type(e).__name__}: {e}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() returned a "
                      f"{type(config).__name__}, not an "
                      "ml_collections.ConfigDict.")
  return config


def _line_in(error: BaseException, path: str) -> str:
  """', line N' of the innermost frame in `path`, or ''."""
  target = os.path.abspath(path)
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == target]
  return f", line {lines[-1]}" if lines else ""


def set_field(config: ml_collections.ConfigDict, field: str, text: str
              ) -> None:
  """config.<field> = `text` read as the field's type.

  bool: true/false/1/0/yes/no; int; float (an int's text too); str: as
  given; tuple or list: a Python literal of one; a field that is None: a
  Python literal when `text` is one, else the text.

  Raises:
    ConfigError: 'Unknown config field 'x.y' in --config.x.y (did you mean
      ...)', or '--config.x=TEXT is invalid: expected an int.'
  """
  section, parts = config, field.split(".")
  for depth, key in enumerate(parts):
    known = list(section.keys())
    if key not in known:
      raise ConfigError(f"Unknown config field {'.'.join(parts[:depth + 1])!r}"
                        f" in {PREFIX}{field}{suggest(key, known)}.")
    if depth == len(parts) - 1:
      break
    section = section[key]
    if not isinstance(section, ml_collections.ConfigDict):
      raise ConfigError(f"{PREFIX}{field}: config.{'.'.join(parts[:depth + 1])}"
                        " is a value, not a section.")
  key = parts[-1]
  current = section[key]
  if isinstance(current, ml_collections.ConfigDict):
    raise ConfigError(f"{PREFIX}{field} is a section: set its fields, e.g. "
                      f"{PREFIX}{field}.{next(iter(current.keys()), 'name')}"
                      "=VALUE.")
  value = _parse(text, current, field)
  with section.unlocked():
    section[key] = value


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _parse(text: str, current: Any, field: str) -> Any:
  def invalid(expected: str):
    return ConfigError(f"{PREFIX}{field}={quote(text)} is invalid: expected "
                       f"{expected}.")
  if isinstance(current, bool):
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise invalid("true or false")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise invalid("an int") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise invalid("a number") from None
  if isinstance(current, str):
    return text
  if isinstance(current, (tuple, list)):
    value = _literal(text)
    if isinstance(value, (tuple, list)):
      return type(current)(value)
    raise invalid(f"a {type(current).__name__}, e.g. (1, 2)")
  if current is None:
    value = _literal(text)
    return text if value is _NOT_A_LITERAL else value
  raise invalid(f"a {type(current).__name__}")


_NOT_A_LITERAL = object()


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return _NOT_A_LITERAL
