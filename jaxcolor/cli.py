"""The command line: the `jaxcolor` command, and how every job starts.

  jaxcolor train --config configs/default.py --workdir runs/default
  jaxcolor colorize --workdir runs/default --output colorized/ photos/
  jaxcolor --help

`jaxcolor NAME ...` runs the job that `python -m jaxcolor.MODULE ...` runs
(COMMANDS): both forms go through `run`, so they take the same flags and
behave alike. Each job's module keeps its `main(argv)` and, where its flags
are not defined at import, a `_define_flags()`; absl's flags are global to
the process, so `jaxcolor` imports only the chosen job's module and defines
only its flags.

`run` is what absl's `app.run` leaves to each job, done once here:
- `--help` prints the job's usage text (what it does, the common
  invocation, where to read more) and its own flags, and exits 0;
  `--helpfull` adds every flag, absl's and the libraries'. absl's own help
  exits 1 and prints the module docstring, which is written for readers of
  the code.
- A flag error (a required flag missing, an unknown flag, a bad value) is
  one line on stderr, exit status 2, instead of absl's `FATAL Flags
  parsing error` and its hint.
- The libraries' INFO and DEBUG records (Orbax's per-checkpoint lines,
  JAX's search for backends, TensorFlow's C++ INFO) are hidden: a job's
  output is its own progress and results. The jobs that report through the
  log (training, evaluation, the benchmark) keep their own INFO lines.
  `--verbosity` (or `-v`), given at all, turns the filter off and lets
  absl's levels apply as asked: `-v 0` shows every INFO line.
- JAX's persistent compilation cache is on (`use_compilation_cache`), so a
  second run of a job loads its compiled programs instead of compiling them
  again (docs/benchmarks.md, "Command start-up").
"""

import dataclasses
import difflib
import importlib
import logging as python_logging
import os
import re
import sys
import types
from typing import Callable, NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging

# Set by `run`: how the running job was invoked, for its messages.
_program = None


@dataclasses.dataclass(frozen=True)
class Command:
  """A job of the `jaxcolor` command.

  `usage` is the `--help` text, with `{prog}` for the command as typed;
  `args` are flags put before the user's (`evaluate` is `main` with
  `--mode=evaluate`); `logs_progress`: the job reports through the log, so
  its own INFO lines stay when the libraries' are hidden.
  """
  module: str
  summary: str
  usage: str
  args: tuple[str, ...] = ()
  logs_progress: bool = False


COMMANDS = {
    "train": Command(
        "jaxcolor.main", "Train a colorizer, or resume a run where it stopped.",
        """\
Usage: {prog} --config FILE[:preset] --workdir DIR [--config.FIELD=VALUE ...]

Trains the system that the config file describes and writes checkpoints,
TensorBoard logs, metrics.jsonl and image grids into DIR; the same command
again resumes from the newest checkpoint, and Ctrl-C saves one first.

  {prog} --config configs/default.py --workdir runs/default
  {prog} --config configs/default.py:smoke --workdir /tmp/smoke

Any config field can be set on the command line (--config.batch_size=32);
--mode=evaluate scores the saved checkpoints instead of training. More:
README.md ("Train") and docs/usage.md.""",
        logs_progress=True),
    "evaluate": Command(
        "jaxcolor.main", "Score a run's saved checkpoints on its evaluation "
        "photos.", """\
Usage: {prog} --config FILE[:preset] --workdir DIR [--config.FIELD=VALUE ...]

Scores the run's saved checkpoints on its evaluation photos, never trains,
and writes DIR/eval/<step>.json and an HTML report for each checkpoint.

  {prog} --config configs/default.py --workdir runs/default
  {prog} --config configs/default.py --workdir runs/default \\
      --config.evaluation.checkpoints=all --config.eval_dataset=folder:/photos

More: docs/usage.md ("Evaluate") and docs/metrics.md.""",
        args=("--mode=evaluate",), logs_progress=True),
    "colorize": Command(
        "jaxcolor.colorize", "Colorize photos, folders and videos.", """\
Usage: {prog} --workdir RUN --output FOLDER INPUT [INPUT ...]
       {prog} --model MODEL --output FOLDER INPUT [INPUT ...]

Colorizes each INPUT (an image file, a folder of images searched
recursively, or a video) with a training run's newest checkpoint or with an
exported model (a folder, an archive or a URL), and writes the results into
FOLDER under the inputs' own names; the inputs are never written over.

  {prog} --workdir runs/default --output colorized/ photo.jpg photos/
  {prog} --model models/default.tar.gz --output colorized/ photos/

More: docs/usage.md ("Colorize"), docs/video.md and docs/deploy.md."""),
    "export": Command(
        "jaxcolor.export", "Export a run as a model to hand on or serve.", """\
Usage: {prog} --workdir RUN --output FOLDER [--archive] [--stablehlo]

Writes the weights that colorize with the run's newest checkpoint, and a
model.json describing them, into a new FOLDER (no training state); the
model loads with `jaxcolor colorize --model FOLDER` or `jaxcolor serve
--model FOLDER`.

  {prog} --workdir runs/default --output models/default --archive

More: docs/deploy.md."""),
    "serve": Command(
        "jaxcolor.serve", "Serve a colorizer as a web page and an HTTP API.",
        """\
Usage: {prog} (--workdir RUN | --model MODEL) [--host 127.0.0.1] [--port 8000]

Serves a page at http://127.0.0.1:8000/ where a photo is dropped and
colorized, and an API that scripts post photos to; Ctrl-C stops it.

  {prog} --workdir runs/default
  curl -F file=@photo.jpg http://127.0.0.1:8000/api/colorize -o colorized.png

Before serving beyond this machine, read docs/deploy.md ("Security")."""),
    "score": Command(
        "jaxcolor.score", "Score colorized photos against the true ones.", """\
Usage: {prog} --truth FOLDER --predictions FOLDER [--output results.json]
       [--csv per_image.csv]

Pairs each true photo with the colorized one of the same name (from any
program) and prints every metric, at full resolution, beside the score of
the gray photo with no color at all.

  {prog} --truth photos/ --predictions colorized/

More: docs/usage.md ("Score") and docs/metrics.md."""),
    "benchmark": Command(
        "jaxcolor.benchmark", "Time the training step, the input pipeline or "
        "inference.", """\
Usage: {prog} --config FILE[:preset] [--steps 20] [--input_pipeline]
       [--colorize FOLDER] [--inference]

Times the training step that the config describes on synthetic data (or,
with --colorize, the colorize path on a folder of photos) and prints every
number as one JSON object on its last line.

  {prog} --config configs/default.py
  {prog} --config configs/default.py --colorize photos/

More: docs/benchmarks.md.""",
        logs_progress=True),
}

_HELP = ("--help", "-help", "--helpshort", "-helpshort", "-h", "-?")
_HELPFULL = ("--helpfull", "-helpfull")


def program() -> str:
  """The running job as the user typed it ('jaxcolor colorize', 'python -m
  jaxcolor.colorize'), for messages that show a command line."""
  return _program or "jaxcolor"


def run(name: str, module: types.ModuleType,
        argv: Sequence[str] | None = None, prog: str | None = None
        ) -> NoReturn:
  """Runs job `name` of COMMANDS, whose code is `module`, as every job runs
  (module docstring): its flags, --help, plain flag errors, quiet
  libraries, the compilation cache, then its `main` under absl.

  `argv`: the command line, program name first (default: sys.argv);
  `prog`: how the job was typed (default: 'python -m <its module>').
  """
  global _program
  command = COMMANDS[name]
  argv = list(sys.argv if argv is None else argv)
  _program = prog or f"python -m {command.module}"
  if hasattr(module, "_define_flags"):
    module._define_flags()
  # absl files flags under the defining module's name, or under sys.argv[0]
  # for `python -m`'s __main__.
  key = sys.argv[0] if module.__name__ == "__main__" else module.__name__
  asked = _help_asked(argv[1:])
  if asked:
    print(help_text(command, _program, key, full=asked == "full"))
    sys.exit(0)
  parse = getattr(module, "_parse_flags", None) or flags.FLAGS

  def parse_flags(args):
    try:
      return parse(args)
    except flags.Error as e:
      print(f"Error: {flag_error_line(e)}; `{_program} --help` lists the "
            "flags.", file=sys.stderr)
      sys.exit(2)

  def main(args):
    verbose = flags.FLAGS["verbosity"].present
    if not verbose:
      quiet_libraries(keep_own_info=command.logs_progress)
    use_compilation_cache()
    from jaxcolor import platforms  # noqa: PLC0415 - imports jax.
    platforms.pin_cpu_without_accelerators()
    try:
      return module.main(args)
    except app.UsageError as e:
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(main, argv=[argv[0], *command.args, *argv[1:]],
          flags_parser=parse_flags)
  sys.exit(0)  # app.run exits itself; this is for the type checker.


def _help_asked(args: Sequence[str]) -> str | None:
  """'short' or 'full' when `args` ask for help (before any '--'), else
  None."""
  for arg in args:
    if arg == "--":
      return None
    if arg in _HELPFULL:
      return "full"
    if arg in _HELP:
      return "short"
  return None


def help_text(command: Command, prog: str, key: str, full: bool) -> str:
  """The job's usage text and its flags (with `full`, every flag)."""
  own = [line for line in flags.FLAGS.module_help(key).splitlines()
         if line.startswith(" ")]  # Less its heading, the module's name.
  lines = [command.usage.format(prog=prog), "", "Flags:", *own]
  if command.args:
    lines.append(f"  ({prog} sets {' '.join(command.args)}.)")
  if full:
    lines += ["", "Every flag, the libraries' included:",
              flags.FLAGS.get_help()]
  lines += ["", "The libraries' log lines are hidden: --verbosity=0 (or -v 0) "
            "shows them.", "--helpfull lists every flag."]
  return "\n".join(lines)


def flag_error_line(error: flags.Error) -> str:
  """absl's flag error as a phrase: '--output is required', 'unknown flag
  --outptu (did you mean --output?)'."""
  text = str(error).splitlines()[0].rstrip(".")
  missing = missing_flags(error)
  if missing:
    return (" and ".join(f"--{name}" for name in missing)
            + (" is" if len(missing) == 1 else " are") + " required")
  if isinstance(error, flags.UnrecognizedFlagError):
    guess = re.search(r"Did you mean: ([^ ,?]+)", str(error))
    return (f"unknown flag --{error.flagname}"
            + (f" (did you mean --{guess.group(1)}?)" if guess else ""))
  return text


def missing_flags(error: Exception) -> list[str]:
  """The required flags that `error` (absl's, from parsing) says were not
  given; [] for any other error."""
  return re.findall(r"Flag --(\w+) must have a value other than None",
                    str(error)) if isinstance(error, flags.Error) else []


# -- quiet libraries ---------------------------------------------------------

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def library_filter(keep_own_info: bool
                   ) -> Callable[[python_logging.LogRecord], bool]:
  """A log filter that passes records from WARNING up, and with
  `keep_own_info` this package's records of any level.

  A record's `pathname` is the file that logged it (absl's logger finds the
  caller), so Orbax's lines are told from ours although both log through
  absl. The levels are Python's: absl's own `logging.WARNING` is -1, on its
  verbosity scale, and would pass everything.
  """
  def keep(record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or (
        keep_own_info and record.pathname.startswith(_PACKAGE_DIR))
  return keep


def quiet_libraries(keep_own_info: bool) -> None:
  """Hides the libraries' records below WARNING (`library_filter`) from
  absl's handler, which writes every Python logger's records, JAX's and
  Orbax's included; and TensorFlow's C++ INFO lines."""
  logging.get_absl_handler().addFilter(library_filter(keep_own_info))
  # Read when TensorFlow loads (a SavedModel export, a TFDS dataset).
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -- the compilation cache ---------------------------------------------------

# Programs that compile faster than this are not worth a file: the cache
# keeps the network and step programs (seconds), not each small helper.
_MIN_COMPILE_SECONDS = 0.2
_OFF = ("off", "0", "false", "no", "none")


def compilation_cache_dir() -> str | None:
  """The folder the jobs keep compiled programs in, None for off.

  JAX's own JAX_COMPILATION_CACHE_DIR wins (JAX reads it at import); else
  JAXCOLOR_COMPILATION_CACHE (a folder, or 'off'); else the user's cache
  folder: $XDG_CACHE_HOME/jaxcolor/xla or ~/.cache/jaxcolor/xla.
  """
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  chosen = os.environ.get("JAXCOLOR_COMPILATION_CACHE", "").strip()
  if chosen.lower() in _OFF and chosen:
    return None
  if chosen:
    return os.path.expanduser(chosen)
  base = os.environ.get("XDG_CACHE_HOME", "")
  if not os.path.isabs(base):  # The XDG spec: a relative path is ignored.
    base = os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxcolor", "xla")


def use_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache for this process, before
  anything compiles; returns its folder (None: off).

  Reusing entries is safe across upgrades and machines sharing a folder:
  JAX keys each entry by the program, the jaxlib version, the backend's
  platform and version, the XLA flags and the compile options, so another
  version or device compiles afresh and never loads a stale program.
  """
  folder = compilation_cache_dir()
  if folder is None:
    return None
  import jax  # noqa: PLC0415 (not for `jaxcolor --help`)

  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", folder)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      _MIN_COMPILE_SECONDS)
  return folder


# -- the `jaxcolor` command --------------------------------------------------

def command_list() -> str:
  """`jaxcolor --help`: the jobs, one line each."""
  width = max(map(len, COMMANDS))
  lines = ["Usage: jaxcolor COMMAND [FLAGS ...]", "", "Commands:"]
  lines += [f"  {name:<{width}}  {command.summary}"
            for name, command in COMMANDS.items()]
  lines += ["", "`jaxcolor COMMAND --help` shows a command's flags. Each is "
            "also `python -m jaxcolor.MODULE`",
            "(train and evaluate: jaxcolor.main). More: README.md."]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> NoReturn:
  """The `jaxcolor` console command: `jaxcolor NAME [FLAGS ...]`."""
  argv = list(sys.argv if argv is None else argv)
  name = argv[1] if len(argv) > 1 else None
  rest = argv[2:]
  if name == "help" and rest and rest[0] in COMMANDS:  # jaxcolor help score
    name, rest = rest[0], ["--help"]
  if name in (*_HELP, *_HELPFULL, "help"):
    print(command_list())
    sys.exit(0)
  if name not in COMMANDS:
    if name is None:
      problem = "Error: name a command."
    else:
      guess = difflib.get_close_matches(name, COMMANDS, n=1)
      problem = (f"Error: {name!r} is not a command"
                 + (f"; did you mean {guess[0]!r}?" if guess else "."))
    print(problem, file=sys.stderr)
    print(command_list(), file=sys.stderr)
    sys.exit(2)
  module = importlib.import_module(COMMANDS[name].module)
  prog = f"jaxcolor {name}"
  run(name, module, [prog, *rest], prog=prog)

