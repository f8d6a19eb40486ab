"""Every code example of README.md and docs/*.md runs as written.

Fenced `bash` and `python` blocks are run, in document order, in one
scratch folder laid out as a user's checkout is after the quick start:

  runs/default      a smoke run of configs/default.py (checkpoint 1500)
  runs/cpu_budget   a copy of it, for the pages about that recipe
  photo.jpg         a photo of the embedded sample; photos/ three more
  film.mp4          a short film made from them (tools/make_clip.py)
  configs/, tools/, launch/, benchmarks/   links into the repository

Python blocks run with `python -c`, shell blocks with `bash -e`, each in its
own process with the virtualenv's python first on PATH and a time limit.
A command line the scratch folder has already run is not run again (the
README and docs/ repeat a few). `python -m jaxcolor.serve` (or `jaxcolor
serve`) starts in the background on a free port, which replaces 8000 in the
rest of its page; it is stopped at the page's end. `jaxcolor X` lines run
where the console command is installed, and are left out with a warning
where it is not. Because runs/default is a smoke run, `--config
configs/default.py` becomes `configs/default.py:smoke` here.

A block that cannot run in the scratch folder (it trains for minutes, needs
a TPU slice, a GPU, the network or the project's data folder) is preceded by
`<!-- docs-test: skip (the reason) -->`; its files and configs are still
checked to exist. Installing packages is never run. Other fences are tagged
`text` or `nginx` (shown, not run); an untagged fence is an error.
"""

import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest

import helpers

REPO = helpers.REPO
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN = {"bash", "python"}
SHOWN = {"text", "nginx", "json", "console"}
BLOCK_TIMEOUT_S = 180
SKIP_MARKER = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->", re.S)
# Commands the scratch folder never runs, whatever the page says: they
# change the machine or need the network. Their reason is this table's.
NEVER_RUN = [
    (re.compile(r"\b(pip|pip3) install\b|\bapt-get\b|\bsudo\b|-m venv\b"),
     "installs software"),
    (re.compile(r"\b(wget|git clone)\b|curl [^\n]*https?://(?!127\.0\.0\.1)"),
     "needs the network"),
]
# What a runnable block may not hold: a value the reader must fill in.
PLACEHOLDER = re.compile(
    r"\[--|<[a-z_]+>|\b(RUN|DIR|PATH_OR_URL|FILE|FOLDER|OUT|WORKDIR|HEX)\b")
SERVE = re.compile(r"^\s*(python -m jaxcolor\.serve|jaxcolor serve)\b")
CONSOLE = re.compile(r"^\s*jaxcolor\s")
# Commands every run of this test must have run, not skipped.
MUST_RUN = ["python -m jaxcolor.colorize", "python -m jaxcolor.export",
            "python -m jaxcolor.score", "python -m jaxcolor.serve"]


@dataclasses.dataclass
class Block:
  path: pathlib.Path
  line: int           # of the opening fence, 1-based
  language: str
  code: str
  marker: str | None  # the docs-test comment right before the fence

  @property
  def where(self) -> str:
    return f"{self.path.relative_to(REPO)}:{self.line}"

  @property
  def skip_reason(self) -> str | None:
    if self.marker is None:
      return None
    match = re.fullmatch(r"skip\s*\((.+)\)", self.marker, re.S)
    return match.group(1).strip() if match else ""


def blocks(path: pathlib.Path) -> list[Block]:
  """The fenced blocks of a Markdown file, with the marker before each."""
  found, lines = [], path.read_text().splitlines()
  i, previous = 0, ""
  while i < len(lines):
    opening = re.match(r"\s*```(\S*)\s*$", lines[i])
    if not opening:
      if lines[i].strip():
        previous = lines[i]
      i += 1
      continue
    indent = len(lines[i]) - len(lines[i].lstrip())
    end = i + 1
    while end < len(lines) and not re.match(r"\s*```\s*$", lines[end]):
      end += 1
    code = "\n".join(line[indent:] for line in lines[i + 1:end]) + "\n"
    marker = SKIP_MARKER.fullmatch(previous.strip())
    found.append(Block(path, i + 1, opening.group(1), code,
                       marker.group(1) if marker else None))
    i, previous = end + 1, ""
  return found


ALL_BLOCKS = [block for path in DOCUMENTS for block in blocks(path)]


def _without_comments(code: str) -> str:
  return "\n".join(re.sub(r"(^|\s)#.*", "", line) for line in code.splitlines())


def _never_run_reason(block: Block) -> str | None:
  for pattern, reason in NEVER_RUN:
    if pattern.search(_without_comments(block.code)):
      return reason
  return None


def test_fences_are_tagged_and_every_skip_gives_a_reason():
  problems = []
  for block in ALL_BLOCKS:
    if block.language not in RUN | SHOWN:
      problems.append(f"{block.where}: fence tagged {block.language!r}; use "
                      f"bash or python (run) or {', '.join(sorted(SHOWN))}")
    if block.marker is not None and not block.skip_reason:
      problems.append(f"{block.where}: {block.marker!r}: write "
                      "'docs-test: skip (the reason)'")
    if block.marker is not None and block.language not in RUN:
      problems.append(f"{block.where}: a docs-test marker on a {block.language} "
                      "fence, which is never run")
  for path in DOCUMENTS:
    markers = sum(bool(SKIP_MARKER.fullmatch(line.strip()))
                  for line in path.read_text().splitlines())
    attached = sum(b.marker is not None for b in ALL_BLOCKS if b.path == path)
    if markers != attached:
      problems.append(f"{path.relative_to(REPO)}: {markers - attached} "
                      "docs-test marker(s) not right before a fence")
  assert not problems, "\n".join(problems)


def test_examples_are_valid_and_name_files_that_exist():
  """Every runnable-language block parses, and the repository files,
  modules and config presets it names exist: skipped blocks included."""
  problems = []
  for block in (b for b in ALL_BLOCKS if b.language in RUN):
    if block.language == "python":
      try:
        compile(block.code, block.where, "exec")
      except SyntaxError as e:
        problems.append(f"{block.where}: {e}")
    else:
      result = subprocess.run(["bash", "-n"], input=block.code, text=True,
                              capture_output=True)
      if result.returncode:
        problems.append(f"{block.where}: {result.stderr.strip()}")
    code = _without_comments(block.code)
    for module in re.findall(r"python -m jaxcolor\.(\w+)", code):
      if not (REPO / "jaxcolor" / f"{module}.py").is_file():
        problems.append(f"{block.where}: no module jaxcolor.{module}")
    for name in re.findall(
        r"(?<![\w/.])((?:configs|tools|launch|benchmarks)/[\w./-]*\w)(:\w+)?",
        code):
      path, preset = name
      if not (REPO / path).exists():
        problems.append(f"{block.where}: {path} does not exist")
      elif preset:
        try:
          helpers.load_config(path, preset[1:])
        except Exception as e:  # noqa: BLE001 (any failure is the finding)
          problems.append(f"{block.where}: {path}{preset}: {e}")
  assert not problems, "\n".join(problems)


# --- Running them ------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _logical_lines(code: str) -> list[str]:
  """Lines with backslash continuations joined (kept as written)."""
  out, current = [], ""
  for line in code.splitlines():
    current += line + "\n"
    if not line.endswith("\\"):
      out.append(current)
      current = ""
  if current:
    out.append(current)
  return out


def _command_key(line: str) -> str:
  return " ".join(_without_comments(line.replace("\\\n", " ")).split())


@dataclasses.dataclass
class Sandbox:
  root: pathlib.Path
  env: dict
  has_console: bool
  ran: set = dataclasses.field(default_factory=set)
  server: subprocess.Popen | None = None
  port: int | None = None

  def substitute(self, text: str) -> str:
    text = re.sub(r"--config configs/default\.py(?=\s)",
                  "--config configs/default.py:smoke", text)
    if self.port:
      text = text.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
    return text

  def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=self.root, env=self.env, text=True,
                          capture_output=True, timeout=BLOCK_TIMEOUT_S,
                          **kwargs)

  def start_server(self, line: str) -> str | None:
    """Starts the serve line in the background; None, or why it failed."""
    self.stop_server()
    self.port = _free_port()
    line = self.substitute(line.replace("\\\n", " ").strip())
    if re.search(r"--port[= ]\d+", line):
      line = re.sub(r"--port[= ]\d+", f"--port {self.port}", line)
    else:
      line += f" --port {self.port}"
    log = open(self.root / "serve.log", "w")  # noqa: SIM115 (the server's)
    self.server = subprocess.Popen(["bash", "-c", f"exec {line}"],
                                   cwd=self.root, env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + BLOCK_TIMEOUT_S
    while time.monotonic() < deadline:
      if self.server.poll() is not None:
        return f"{line!r} exited:\n{self._server_log()}"
      try:
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/info",
                               timeout=2).read()
        return None
      except OSError:
        time.sleep(0.3)
    return f"{line!r} did not answer in {BLOCK_TIMEOUT_S} s:\n{self._server_log()}"

  def _server_log(self) -> str:
    return (self.root / "serve.log").read_text()[-3000:]

  def stop_server(self) -> None:
    if self.server is not None:
      os.killpg(self.server.pid, signal.SIGTERM)
      try:
        self.server.wait(timeout=20)
      except subprocess.TimeoutExpired:
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()
    self.server, self.port = None, None


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
  root = tmp_path_factory.mktemp("docs")
  helpers.make_checkpoint(helpers.load_config("configs/default.py"),
                          root / "runs" / "default", steps=(1500,))
  shutil.copytree(root / "runs" / "default", root / "runs" / "cpu_budget")
  sample = sorted((REPO / "jaxcolor" / "sample_data" / "eval").glob("*.jpg"))
  shutil.copy(sample[0], root / "photo.jpg")
  (root / "photos").mkdir()
  for photo in sample[1:4]:
    shutil.copy(photo, root / "photos" / photo.name)
  spec = importlib.util.spec_from_file_location(
      "make_clip", REPO / "tools" / "make_clip.py")
  make_clip = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(make_clip)
  make_clip.make(sample[1:3], root / "film.mp4", None, frames_per_shot=6,
                 size=(96, 64), fps=12)
  for name in ("configs", "tools", "launch", "benchmarks"):
    (root / name).symlink_to(REPO / name)
  bin_dir = str(pathlib.Path(sys.executable).parent)
  env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"],
             JAXCOLOR_CACHE=str(root / ".cache"), PYTHONUNBUFFERED="1")
  env = {k: v for k, v in env.items() if not k.startswith("PYTEST_")}
  box = Sandbox(root, env, shutil.which("jaxcolor", path=env["PATH"]) is not None)
  yield box
  box.stop_server()


def _run_block(box: Sandbox, block: Block, notes: list[str]) -> str | None:
  """Runs one block; None, or the failure's description."""
  if block.language == "python":
    result = box.run([sys.executable, "-c", box.substitute(block.code)])
    return None if result.returncode == 0 else (
        f"exit {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}")
  script, run_keys = [], []

  def flush() -> str | None:
    if not any(_command_key(line) for line in script):
      script.clear()
      return None
    text = "".join(script)
    script.clear()
    result = box.run(["bash", "-e", "-c", text])
    if result.returncode:
      return (f"exit {result.returncode} in:\n{text}\n"
              f"{(result.stdout + result.stderr)[-3000:]}")
    box.ran.update(run_keys)
    run_keys.clear()
    return None

  for line in _logical_lines(block.code):
    key = _command_key(line)
    if not key:
      continue
    if CONSOLE.match(line) and not box.has_console:
      notes.append(f"{block.where}: not run, the `jaxcolor` command is not "
                   f"installed: {key}")
      continue
    if key in box.ran:
      continue
    if SERVE.match(line):
      failure = flush() or box.start_server(line)
      if failure:
        return failure
      box.ran.add(key)
      continue
    script.append(box.substitute(line))
    run_keys.append(key)
  return flush()


def test_code_examples_run(sandbox):
  failures, notes, skipped, ran, timings = [], [], [], [], []
  python_ran = 0
  for path in DOCUMENTS:
    for block in (b for b in ALL_BLOCKS if b.path == path):
      if block.language not in RUN:
        continue
      reason = block.skip_reason or _never_run_reason(block)
      if reason:
        skipped.append(f"{block.where}: {reason}")
        continue
      if PLACEHOLDER.search(_without_comments(block.code)):
        failures.append(f"{block.where}: a placeholder in a runnable block "
                        "(write a value, or mark it skip with a reason)")
        continue
      start = time.monotonic()
      try:
        failure = _run_block(sandbox, block, notes)
      except subprocess.TimeoutExpired:
        failure = f"over {BLOCK_TIMEOUT_S} s"
      timings.append(f"{time.monotonic() - start:5.1f} s  {block.where}")
      if failure:
        failures.append(f"{block.where} ({block.language}): {failure}")
      else:
        ran.append(block.where)
        python_ran += block.language == "python"
    sandbox.stop_server()  # A page's server serves that page's examples.
  print(f"{len(ran)} blocks ran, {len(skipped)} skipped:",
        *timings, *skipped, *notes, sep="\n  ")
  if notes:
    warnings.warn(f"{len(notes)} docs example line(s) not run:\n"
                  + "\n".join(notes), stacklevel=1)
  assert not failures, "\n\n".join(failures)
  missing = [command for command in MUST_RUN
             if not any(key.startswith(command) for key in sandbox.ran)]
  assert not missing, f"no example ran {missing}"
  assert python_ran >= 2, "fewer than two Python examples ran"
