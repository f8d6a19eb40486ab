"""The maintainers' scripts (tools/, benchmarks/) name modules that exist.

They run rarely (a quality protocol, a benchmark round), so a move inside
jaxcolor/ that breaks one would go unseen until the day it is needed. Each
`from jaxcolor... import name` and `import jaxcolor...` is resolved here,
without running the script.
"""

import ast
import importlib
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*REPO.glob("tools/*.py"), *REPO.glob("benchmarks/*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_its_jaxcolor_imports_resolve(script):
  tree = ast.parse(script.read_text(), filename=str(script))
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module.split(".")[0] == "jaxcolor"):
      module = importlib.import_module(node.module)
      for alias in node.names:
        assert hasattr(module, alias.name) or importlib.util.find_spec(
            f"{node.module}.{alias.name}") is not None, (
                f"{script.name}: from {node.module} import {alias.name}")
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] == "jaxcolor":
          importlib.import_module(alias.name)
