"""The package's import graph: no cycle, and no import from a lower floor to
a higher one (the floors are docs/design.md's layout, bottom first).

The graph is read from the source (every `import`, at module level or in a
function, and the registries' `importlib` names), so a cycle fails here
even where Python would import it without complaint. One fresh interpreter
then imports every module, leaves first, as a user's program would.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Bottom first. A module may import its own floor and those below it; a
# pattern 'x.*' covers x's submodules (the package itself is named alone).
FLOORS = (
    # The ground floor: errors and enumerations, and the subpackages
    # themselves (their __init__ imports nothing).
    ("core.errors", "core.choices", "core", "runtime", "safety", "training",
     "evaluation", "inference", "benchmarking"),
    # Primitives: color space, config schema, mesh, convolution forms, the
    # process's start-up, image transforms, per-image metrics, losses.
    ("core.*", "backends", "backends.*", "runtime.logs",
     "runtime.compilation_cache", "runtime.commands", "runtime.platforms",
     "runtime.host_memory", "runtime.distributed", "runtime.config_file",
     "data.transforms", "data.sharding", "evaluation.color_metrics",
     "evaluation.image_grid", "training.losses", "training.optimizers",
     "training.preemption", "benchmarking.chips", "benchmarking.flops",
     "safety.untrusted", "inference.guided_upsampling"),
    # Parts: how a job starts, data, networks, files in and out.
    ("runtime.job", "data.*", "data", "models.*", "safety.*",
     "training.rundir", "training.checkpointing", "training.run_log",
     "evaluation.report", "inference.rendering", "inference.photo_paths",
     "inference.rgb_program", "inference.film", "inference.artifact",
     "inference.shipped_model",
     "benchmarking.roofline", "web.app", "web.batcher", "web.uploads", "web"),
    # The registries' neighbours: the model registry, FID's network, the
    # pretrained encoder.
    ("models", "evaluation.fid", "training.backbone"),
    # The systems: each paper's training step.
    ("systems.base", "systems.*", "systems"),
    # What runs around a step.
    ("training.divergence", "training.ab_prior", "evaluation.evaluator"),
    ("training.train_step", "training.experiment"),
    # The jobs' libraries.
    ("training.loop", "evaluation.checkpoints", "evaluation.scoring",
     "evaluation.temperature", "inference.run_loading", "inference.colorizer",
     "inference.colorize_job",
     "inference.exporting", "benchmarking.compile_only",
     "benchmarking.colorize_timing", "benchmarking.step_timing",
     "web.server"),
    # The commands: flags, then one call into the library.
    ("main", "train", "evaluate", "colorize", "export", "serve", "score",
     "benchmark", "video", "ab_prior", "temperature", "cli"),
)
# Packages that import their modules by name (`importlib`): a registry.
REGISTRIES = ("models", "systems")


def package_modules(root: pathlib.Path = REPO) -> dict[str, pathlib.Path]:
  """{'jaxcolor.x.y': path} of every module of the package."""
  modules = {}
  for path in sorted((root / "jaxcolor").rglob("*.py")):
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    modules[".".join(parts)] = path
  return modules


def import_graph(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
  """{module: the package's modules it imports}."""
  graph = {}
  for name, path in modules.items():
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        found |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          found.add(full if full in modules else node.module)
    graph[name] = {m for m in found if m in modules and m != name}
  for registry in REGISTRIES:
    package = f"jaxcolor.{registry}"
    graph[package] |= {m for m in modules if m.startswith(package + ".")
                       and not m.endswith(".base")}
  return graph


def floor_of(module: str) -> int:
  """The floor of 'jaxcolor.x.y' in FLOORS (a ValueError if it has none)."""
  short = module.removeprefix("jaxcolor.")
  for level, patterns in enumerate(FLOORS):
    for pattern in patterns:
      if short == pattern or (pattern.endswith(".*") and
                              short.startswith(pattern[:-1])):
        return level
  raise ValueError(f"{module} has no floor in tests/test_layering.py FLOORS "
                   "(add it, and its line to docs/design.md)")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
  """'a -> b' for each import of a higher floor's module."""
  return sorted(f"{a} -> {b}" for a, targets in graph.items()
                if a != "jaxcolor" for b in targets
                if floor_of(b) > floor_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for target in sorted(graph.get(node, ())):
      if target not in index:
        visit(target)
        low[node] = min(low[node], low[target])
      elif target in on_stack:
        low[node] = min(low[node], index[target])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


def leaves_first(graph: dict[str, set[str]]) -> list[str]:
  """The modules, each after every module it imports."""
  order, seen = [], set()

  def visit(node):
    if node in seen:
      return
    seen.add(node)
    for target in sorted(graph[node]):
      visit(target)
    order.append(node)

  for node in sorted(graph):
    visit(node)
  return order


def test_every_module_has_a_floor_and_imports_only_downward():
  graph = import_graph(package_modules())
  for module in graph:
    if module != "jaxcolor":
      floor_of(module)
  assert upward_imports(graph) == []


def test_no_import_cycle():
  assert cycles(import_graph(package_modules())) == []


def test_the_checks_catch_a_cycle_and_an_upward_import():
  graph = import_graph(package_modules())
  graph["jaxcolor.core.errors"] = {"jaxcolor.train"}  # Upward, and a cycle.
  assert "jaxcolor.core.errors -> jaxcolor.train" in upward_imports(graph)
  assert any("jaxcolor.core.errors" in c and "jaxcolor.train" in c
             for c in cycles(graph))
  with pytest.raises(ValueError, match="no floor"):
    floor_of("jaxcolor.new_module")


def test_a_fresh_interpreter_imports_every_module_leaves_first():
  order = leaves_first(import_graph(package_modules()))
  program = "import importlib\nfor m in %r:\n  importlib.import_module(m)\n" % order
  result = subprocess.run([sys.executable, "-c", program], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
