"""The `jaxcolor` command: `jaxcolor NAME [FLAGS ...]` runs a job.

  jaxcolor train --config configs/default.py --workdir runs/default
  jaxcolor colorize --workdir runs/default --output colorized/ photos/
  jaxcolor --help

Each job is also `python -m jaxcolor.NAME`; both forms start it through
jaxcolor/runtime/job.py, so they take the same flags and behave alike.
absl's flags are global to the process, so only the chosen job's module is
imported and only its flags are defined. The jobs and their `--help` texts
are in jaxcolor/runtime/commands.py.
"""

import difflib
import importlib
import sys
from typing import NoReturn, Sequence

from jaxcolor.runtime import job
from jaxcolor.runtime.commands import COMMANDS


def command_list() -> str:
  """`jaxcolor --help`: the jobs, one line each."""
  width = max(map(len, COMMANDS))
  lines = ["Usage: jaxcolor COMMAND [FLAGS ...]", "", "Commands:"]
  lines += [f"  {name:<{width}}  {command.summary}"
            for name, command in COMMANDS.items()]
  lines += ["", "`jaxcolor COMMAND --help` shows a command's flags. Each is "
            "also `python -m jaxcolor.COMMAND`.", "More: README.md."]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> NoReturn:
  """The `jaxcolor` console command: `jaxcolor NAME [FLAGS ...]`."""
  argv = list(sys.argv if argv is None else argv)
  name = argv[1] if len(argv) > 1 else None
  rest = argv[2:]
  if name == "help" and rest and rest[0] in COMMANDS:  # jaxcolor help score
    name, rest = rest[0], ["--help"]
  if name in (*job.HELP, *job.HELPFULL, "help"):
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
  job.run(name, module, [prog, *rest], prog=prog)
