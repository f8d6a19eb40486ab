"""The command line as a user meets it: each job's common path prints its own
lines and no library's, `--help` exits 0 and speaks of flags, not code, and
the `jaxcolor` command dispatches to the jobs (jaxcolor/runtime/job.py)."""

import json
import logging
import os
import re
import subprocess
import sys
import tomllib
import urllib.request

import pytest

import helpers
from jaxcolor.runtime import compilation_cache
from jaxcolor.runtime import job
from jaxcolor.runtime import logs

PHOTO = (helpers.REPO / "jaxcolor" / "sample_data" / "eval"
         / "bsds_test_140006.jpg")
# `jaxcolor ARGS` as the console script runs it, without needing it installed.
JAXCOLOR = [sys.executable, "-c", "from jaxcolor import cli; cli.main()"]
# absl's log prefix (Python's `I1207 13:52:21.87 ...` and C++'s `I0000
# 00:00:1796...`), and the library lines this module exists to hide.
_NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|Unable to initialize backend"
                    r"|CheckpointManager|oneDNN|absl::InitializeLog|Traceback",
                    re.MULTILINE)


def _run(argv, cwd, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(argv, capture_output=True, text=True, timeout=300,
                        cwd=cwd, **kwargs)


def _assert_quiet(result: subprocess.CompletedProcess, status: int = 0) -> None:
  text = result.stdout + result.stderr
  assert result.returncode == status, text[-3000:]
  noise = _NOISE.search(text)
  assert noise is None, f"unexpected {noise.group(0)!r} in:\n{text[-3000:]}"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("cli")
  helpers.make_checkpoint(helpers.load_config("configs/default.py"),
                          root / "run", steps=(6,))
  (root / "truth").mkdir()
  (root / "truth" / PHOTO.name).write_bytes(PHOTO.read_bytes())
  return root


def test_the_common_path_prints_no_library_lines(run_dir):
  # Both forms of each command, through a run, an artifact and a score.
  result = _run([*JAXCOLOR, "colorize", "--workdir=run", "--output=by_run",
                 "truth"], run_dir)
  _assert_quiet(result)
  assert "Colorized 1 file(s) into by_run" in result.stdout
  result = _run([sys.executable, "-m", "jaxcolor.export", "--workdir=run",
                 "--output=model"], run_dir)
  _assert_quiet(result)
  assert "Exported output 'generator_ema' of step 6" in result.stdout
  result = _run([sys.executable, "-m", "jaxcolor.colorize", "--model=model",
                 "--output=by_model", "truth"], run_dir)
  _assert_quiet(result)
  result = _run([*JAXCOLOR, "score", "--truth=truth",
                 "--predictions=by_model"], run_dir)
  _assert_quiet(result)
  assert "1 scored, 0 missing, 0 failed" in result.stdout


def test_serve_starts_quietly_and_answers(run_dir):
  process = subprocess.Popen([*JAXCOLOR, "serve", "--workdir=run", "--port=0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=run_dir)
  try:
    line = process.stdout.readline()  # "Serving 'generator_ema' on http://..."
    assert "on http://127.0.0.1:" in line, (
        process.stderr.read()[-3000:] if process.poll() is not None else line)
    url = line.split(" on ")[1].split()[0]
    with urllib.request.urlopen(url + "api/info", timeout=60) as response:
      assert json.load(response)["step"] == 6
  finally:
    process.terminate()
    stdout, stderr = process.communicate(timeout=30)
  text = line + stdout + stderr
  assert _NOISE.search(text) is None, text[-3000:]


def test_help_exits_0_and_speaks_of_flags_not_code(run_dir):
  cases = {name: [*JAXCOLOR, name, "--help"] for name in job.COMMANDS}
  cases["python -m"] = [sys.executable, "-m", "jaxcolor.colorize", "--help"]
  cases["missing flag"] = [*JAXCOLOR, "export", "--workdir=run"]
  # Side by side: each is an interpreter importing JAX, seconds apiece.
  running = {case: subprocess.Popen(argv, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True,
                                    cwd=run_dir)
             for case, argv in cases.items()}
  results = {case: (process.wait(timeout=300), *process.communicate())
             for case, process in running.items()}
  for case, (status, stdout, stderr) in results.items():
    if case == "missing flag":
      continue
    assert status == 0 and not stderr.strip(), (case, stderr[-3000:])
    assert stdout.startswith("Usage: ") and "Flags:\n  --" in stdout, case
    assert not re.search(r"rendering\.|photo_paths\.|Colorizer\.|Traceback",
                         stdout), (case, stdout)
  assert results["python -m"][1].startswith(
      "Usage: python -m jaxcolor.colorize --workdir RUN")
  assert "--workdir: " in results["evaluate"][1]  # Defined by train.py.
  status, stdout, stderr = results["missing flag"]
  assert status == 2 and stderr.splitlines() == [
      "Error: --output is required; `jaxcolor export --help` lists the "
      "flags."], stderr[-3000:]


def test_jaxcolor_lists_its_commands(tmp_path):
  listing = _run([*JAXCOLOR, "--help"], tmp_path)
  assert listing.returncode == 0 and not listing.stderr
  for name in job.COMMANDS:
    assert f"\n  {name} " in listing.stdout
  for argv, message in ((["colorise"], "did you mean 'colorize'?"),
                        ([], "name a command")):
    result = _run([*JAXCOLOR, *argv], tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr.splitlines()[0]
    assert listing.stdout in result.stderr
  scripts = tomllib.loads((helpers.REPO / "pyproject.toml").read_text())[
      "project"]["scripts"]
  assert scripts == {"jaxcolor": "jaxcolor.cli:main"}


def test_library_info_is_filtered_and_ours_kept_where_asked():
  def record(path, level):
    return logging.LogRecord("absl", level, path, 1, "m", None, None)

  ours = os.path.join(os.path.dirname(job.__file__), "train.py")
  orbax = "/venv/site-packages/orbax/checkpoint/checkpoint_manager.py"
  progress, quiet = logs.library_filter(True), logs.library_filter(False)
  assert progress(record(ours, logging.INFO))
  assert not progress(record(orbax, logging.INFO))
  assert not quiet(record(ours, logging.INFO))
  assert quiet(record(orbax, logging.WARNING))


@pytest.mark.parametrize("env, expected", [
    ({"JAX_COMPILATION_CACHE_DIR": "/jax", "JAXCOLOR_COMPILATION_CACHE": "off"},
     "/jax"),
    ({"JAXCOLOR_COMPILATION_CACHE": "off"}, None),
    ({"JAXCOLOR_COMPILATION_CACHE": "/mine"}, "/mine"),
    ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/jaxcolor/xla"),
    ({"XDG_CACHE_HOME": "relative", "HOME": "/home/u"},
     "/home/u/.cache/jaxcolor/xla"),
])
def test_compilation_cache_folder(monkeypatch, env, expected):
  for name in ("JAX_COMPILATION_CACHE_DIR", "JAXCOLOR_COMPILATION_CACHE",
               "XDG_CACHE_HOME"):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert compilation_cache.compilation_cache_dir() == expected
