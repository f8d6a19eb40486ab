"""How every job starts: `python -m jaxcolor.X` and `jaxcolor X` both call `run`.

`run` is what absl's `app.run` leaves to each job, done once here:
- `--help` prints the job's usage text (jaxcolor/runtime/commands.py: what
  it does, the common invocation, where to read more) and its own flags,
  and exits 0; `--helpfull` adds every flag, absl's and the libraries'.
  absl's own help exits 1 and prints the module docstring, which is written
  for readers of the code.
- absl's flag errors (an unknown flag, a bad value) are printed in absl's
  words as one line on stderr, exit status 2; a required flag that is
  missing is ours to say (`Command.required`).
- A job's config (`--config FILE[:preset]`, `--config.FIELD=VALUE`) is
  loaded here, by jaxcolor/runtime/config_file.py, before the job runs:
  a bad config fails before anything is built or compiled.
- A `JobError` (jaxcolor/core/errors.py) that escapes the job is printed as
  `<label>: <message>` and exits with its status; so is an OSError, the
  system's refusal of a file (a full disk, no permission), which names the
  file. Anything else is a fault of the code and keeps its traceback.
- The libraries' INFO and DEBUG records are hidden (jaxcolor/runtime/logs.py)
  unless `--verbosity` (or `-v`) is given; JAX's persistent compilation
  cache is on (jaxcolor/runtime/compilation_cache.py); JAX starts on the CPU
  alone where no accelerator is attached (jaxcolor/runtime/platforms.py).
"""

import sys
import types
from typing import NoReturn, Sequence

import ml_collections
from absl import app
from absl import flags

from jaxcolor.core.errors import JobError
from jaxcolor.runtime import compilation_cache
from jaxcolor.runtime import config_file
from jaxcolor.runtime import logs
from jaxcolor.runtime.commands import COMMANDS, Command

HELP = ("--help", "-help", "--helpshort", "-helpshort", "-h", "-?")
HELPFULL = ("--helpfull", "-helpfull")

# Set by `run`: how the running job was invoked, and its loaded config.
_program = None
_config = None


def program() -> str:
  """The running job as the user typed it ('jaxcolor colorize', 'python -m
  jaxcolor.colorize'), for messages that show a command line."""
  return _program or "jaxcolor"


def config() -> ml_collections.ConfigDict:
  """The running job's config, loaded and overridden by `run`."""
  if _config is None:
    raise RuntimeError("config() is for jobs started by job.run with a "
                       "command whose `config` is set.")
  return _config


def takes_no_arguments(argv: Sequence[str]) -> None:
  """A usage error for words after the flags, in a job that takes none."""
  if len(argv) > 1:
    raise app.UsageError(f"{program()} takes only flags, not "
                         f"{' '.join(argv[1:])}.")


def run(name: str, module: types.ModuleType,
        argv: Sequence[str] | None = None, prog: str | None = None
        ) -> NoReturn:
  """Runs job `name` of COMMANDS, whose code is `module`, as every job runs
  (module docstring): its flags, --help, plain errors, quiet libraries, the
  compilation cache, its config, then its `main(argv)` under absl.

  `argv`: the command line, program name first (default: sys.argv);
  `prog`: how the job was typed (default: 'python -m <its module>').
  """
  global _program
  command = COMMANDS[name]
  argv = list(sys.argv if argv is None else argv)
  _program = prog or f"python -m {command.module}"
  before = set(flags.FLAGS)
  if hasattr(module, "_define_flags"):
    module._define_flags()
  own = sorted(set(flags.FLAGS) - before)  # The job's flags, whoever defined them.
  asked = _help_asked(argv[1:])
  if asked:
    print(help_text(command, _program, own, full=asked == "full"))
    sys.exit(0)
  overrides = []
  if command.config:
    try:
      argv, overrides = config_file.split_overrides(argv)
    except JobError as e:
      _exit(e)

  def parse_flags(args):
    try:
      rest = flags.FLAGS(args)
    except flags.Error as e:  # absl's words, on one line.
      _usage_error(str(e).splitlines()[0])
    missing = [f"--{f}" for f in command.required if flags.FLAGS[f].value is None]
    if missing:
      _usage_error(" and ".join(missing)
                   + (" is" if len(missing) == 1 else " are") + " required")
    return rest

  def main(args):
    if not flags.FLAGS["verbosity"].present:
      logs.quiet_libraries(keep_own_info=command.logs_progress)
    compilation_cache.use_compilation_cache()
    from jaxcolor.runtime import platforms  # noqa: PLC0415 - imports jax.
    platforms.pin_cpu_without_accelerators()
    try:
      if command.config:
        global _config
        _config = config_file.load(flags.FLAGS.config, overrides)
      return module.main(args)
    except app.UsageError as e:
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(2)
    except JobError as e:
      _exit(e)
    except OSError as e:  # The system's refusal, naming the file.
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(main, argv=argv, flags_parser=parse_flags)
  sys.exit(0)  # app.run exits itself; this is for the type checker.


def _exit(error: JobError) -> NoReturn:
  print(f"{error.label}: {error}", file=sys.stderr)
  sys.exit(error.exit_status)


def _usage_error(text: str) -> NoReturn:
  print(f"Error: {text.rstrip('.')}; `{program()} --help` lists the flags.",
        file=sys.stderr)
  sys.exit(2)


def _help_asked(args: Sequence[str]) -> str | None:
  """'short' or 'full' when `args` ask for help (before any '--'), else
  None."""
  for arg in args:
    if arg == "--":
      return None
    if arg in HELPFULL:
      return "full"
    if arg in HELP:
      return "short"
  return None


def help_text(command: Command, prog: str, names: Sequence[str],
              full: bool) -> str:
  """The job's usage text and its flags `names` (with `full`, every flag)."""
  lines = [command.usage.format(prog=prog), "", "Flags:"]
  for name in names:
    flag = flags.FLAGS[name]
    default = "" if flag.default is None else f" (default: {flag.default_as_str})"
    lines.append(flags.text_wrap(f"{flag.help}{default}", length=80,
                                 indent="    ",
                                 firstline_indent=f"  --{name}: "))
  if full:
    lines += ["", "Every flag, the libraries' included:",
              flags.FLAGS.get_help()]
  lines += ["", "The libraries' log lines are hidden: --verbosity=0 (or -v 0) "
            "shows them.", "--helpfull lists every flag."]
  return "\n".join(lines)
