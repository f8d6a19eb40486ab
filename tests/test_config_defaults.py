"""One truth per default: every default of a config field is stated once,
and code reads fields as they stand.

Where a default lives (jaxcolor/core/configuration.py's docstring): a common
field's in `base_config`; an optimizer's in its registry entry
(`optimizers.REGISTRY`, which fills them in when it checks a section); the
pretrained encoder's in `backbone.FIELDS`; a network's in its module's
fields; a system's own sections are set by its config file. A config
written before a field existed (a run's config.json, an artifact's
model.json) is given it when it is read back (`fill_newer_fields`).

Three checks: no code asks a config for a field with a fallback of its own
(`.get`); every config file's every preset validates and builds its system,
which reads every field it needs; and an older config.json or model.json,
without the fields added since, still loads and colorizes as it did.
"""

import ast
import copy
import importlib.util
import itertools
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

import helpers
from jaxcolor import systems
from jaxcolor.core import config_fields
from jaxcolor.core import configuration
from jaxcolor.evaluation import evaluator
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.inference import exporting

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((REPO / "configs").glob("*.py"))
SMOKE = "smoke"


# -- (a) no fallback values in the code -------------------------------------


def _chain(node: ast.AST) -> list[str] | None:
  """['self', 'config', 'loss'] for `self.config.loss`; None for anything
  but a name or an attribute chain on one."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name):
    return None
  return [node.id, *reversed(parts)]


def _looked_up_in(node: ast.AST) -> ast.AST | None:
  """`x` of `x[...]` or `x.get(...)`; None for other expressions."""
  if isinstance(node, ast.Subscript):
    return node.value
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
      and node.func.attr == "get"):
    return node.func.value
  return None


class _Scope:
  """What the names of one function hold: `configs`, names known to hold
  a config; `records`, names known to hold a parsed record instead."""

  def __init__(self, configs=frozenset(), records=frozenset()):
    self.configs, self.records = frozenset(configs), frozenset(records)

  def holds_config(self, node: ast.AST) -> bool:
    """Whether expression `node` is a config or a section of one (the rule
    of `config_lookups_with_fallbacks`)."""
    if isinstance(node, ast.BoolOp):
      return any(self.holds_config(value) for value in node.values)
    if isinstance(node, ast.IfExp):
      return self.holds_config(node.body) or self.holds_config(node.orelse)
    inner = _looked_up_in(node)
    if inner is not None:
      return self.holds_config(inner)
    chain = _chain(node)
    if chain is None or chain[0] in self.records:
      return False
    return chain[0] in self.configs or any(
        part == "config" or part.endswith("_config") for part in chain)

  def enter(self, function: ast.AST) -> "_Scope":
    """The scope of `function`, nested in this one."""
    args = function.args
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    configs = set(self.configs) | {
        a.arg for a in params
        if a.annotation is not None
        and "ConfigDict" in ast.unparse(a.annotation)}
    body = function.body if isinstance(function.body, list) else [
        function.body]
    assigns = [(node.value, {t.id for t in node.targets
                             if isinstance(t, ast.Name)})
               for node in itertools.chain.from_iterable(map(ast.walk, body))
               if isinstance(node, ast.Assign)]
    scope = _Scope(configs, self.records)
    records = {name for value, targets in assigns for name in targets
               if (inner := _looked_up_in(value)) is not None
               and isinstance(inner, ast.Name)
               and not scope.holds_config(inner)}
    scope = _Scope(configs, (set(self.records) | records) - configs)
    for _ in range(2):  # Names assigned from assigned names, in any order.
      for value, targets in assigns:
        if scope.holds_config(value):
          scope = _Scope(scope.configs | targets, scope.records - targets)
    return scope


def config_lookups_with_fallbacks(source: str) -> list[str]:
  """'line N: CODE' for each lookup in `source` that falls back on a value
  of its own: `X.get(...)` (with or without a default: `.get(key)` falls
  back on None) or `getattr(X, name, default)`, where X holds a config.

  X holds a config when it is
    - a name or attribute chain with a part named `config` or `*_config`
      (`config`, `self.config.loss`, `system.config.evaluation`,
      `self.backbone_config`): the package's names for configs;
    - a parameter of the enclosing function (or of one around it)
      annotated as a ConfigDict (`opt: ml_collections.ConfigDict`), as
      every function taking a config section is;
    - a name the enclosing function assigns from such an expression
      (`settings = system.config.evaluation`), also through `or`, `if`,
      a subscript or `.get`;
  but not a name the enclosing function assigns from a member of a name
  that holds no config (`config = meta["config"]`: model.json's config as
  parsed JSON, checked field by field before it becomes a ConfigDict).
  So a dict that is not a config (a JSON record, HTTP headers, a pytree,
  `os.environ`) may be read with `.get`, and a section passed on under
  another name is still seen through its parameter's annotation.
  """
  found = []

  def visit(node: ast.AST, scope: _Scope) -> None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      scope = scope.enter(node)
    if isinstance(node, ast.Call):
      func = node.func
      if ((isinstance(func, ast.Attribute) and func.attr == "get"
           and scope.holds_config(func.value))
          or (isinstance(func, ast.Name) and func.id == "getattr"
              and len(node.args) == 3 and scope.holds_config(node.args[0]))):
        found.append(f"line {node.lineno}: {ast.unparse(node)}")
    for child in ast.iter_child_nodes(node):
      visit(child, scope)

  visit(ast.parse(source), _Scope())
  return found


def test_the_rule_finds_fallbacks_and_leaves_plain_dicts():
  """The rule on the forms the package used before, and on dicts that are
  not configs."""
  flagged = config_lookups_with_fallbacks(SOURCE_WITH_FALLBACKS)
  assert len(flagged) == 8, flagged
  assert not config_lookups_with_fallbacks(SOURCE_WITHOUT)


SOURCE_WITH_FALLBACKS = """
def a(config):
  return config.loss.get("gan_weight", 1.0), config.get("generator_ema_decay")
def b(opt: ml_collections.ConfigDict, num_steps):
  def inner():
    return opt.get("nesterov", False)
  return opt.get("name", "adam"), inner
def c(system):
  settings = system.config.get("evaluation") or {}
  return settings.get("auc_step", 1.0)
class S:
  def d(self):
    return self.backbone_config.get("path", ""), getattr(self.config, "x", 0)
"""
SOURCE_WITHOUT = """
import os
def e(metrics, request, variables, config):
  kind = request.headers.get("content-type", "")
  return (os.environ.get("HOME"), metrics.get("final_output"),
          variables.get("batch_stats", {}), kind, config.seed)
def f(meta):
  config = meta["config"]
  return config.get("system"), config.get("image_size")
"""


@pytest.mark.parametrize("path", sorted(
    p.relative_to(REPO) for p in [*(REPO / "jaxcolor").rglob("*.py"),
                                  *CONFIG_FILES]), ids=str)
def test_no_config_field_is_read_with_a_fallback(path):
  found = config_lookups_with_fallbacks((REPO / path).read_text())
  assert not found, (
      f"{path}: a config field read with a fallback value; read it as "
      "`config.section.field` and state its default once (base_config, the "
      f"optimizer registry, backbone.FIELDS, the config file): {found}")


# -- (b) every preset validates, and builds what reads it -------------------


def _presets(path: pathlib.Path) -> tuple[str, ...]:
  """The presets `get_config` accepts: its `check_presets(arg, (...))`."""
  for node in ast.walk(ast.parse(path.read_text())):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id == "check_presets"):
      return ast.literal_eval(node.args[1])
  raise AssertionError(f"{path} calls no check_presets")


def _get_config(path: pathlib.Path, arg: str | None):
  spec = importlib.util.spec_from_file_location(f"cfg_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.lock()  # As jaxcolor/runtime/config_file.py hands it on.
  return config


def _arguments(path: pathlib.Path) -> list[str | None]:
  """No preset, each preset alone, and each other one with the smoke one."""
  presets = _presets(path)
  assert SMOKE in presets, f"{path} has no :{SMOKE} preset"
  return [None, *presets,
          *(f"{p},{SMOKE}" for p in presets if p != SMOKE)]


@pytest.mark.parametrize("path, arg", [
    (p.relative_to(REPO), arg) for p in CONFIG_FILES for arg in _arguments(p)],
    ids=str)
def test_every_preset_validates_and_builds_its_system(path, arg):
  """The common checks, the optimizers' (at creation) and, for the smoke
  presets, the system's own (its networks traced at the image size, the
  encoder's weights named) and a trace of every phase's step, of its
  evaluation step and of colorize: everything that reads the config, with
  nothing compiled. A field a system read and the config lacked would fail
  here, named (`config_fields.MissingField`)."""
  config = _get_config(REPO / path, arg)
  devices = jax.device_count()
  configuration.scale_batch_sizes(config, devices)
  system = systems.create(config)
  configuration.validate(config, device_count=devices,
                         extra_fields=system.config_fields)
  if arg is None or SMOKE not in arg.split(","):
    return
  system.validate()
  state = system.abstract_state()
  size, batch_size = config.image_size, config.batch_size
  batch = {"image": jax.ShapeDtypeStruct((batch_size, size, size, 3),
                                         jnp.uint8),
           "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  rng = jax.random.key(0)
  phases = {system.phase(step) for step in range(config.num_train_steps)}
  for phase in sorted(phases):
    new_state, metrics = jax.eval_shape(system.phase_train_step(phase), state,
                                        batch, rng)
    assert metrics and jax.tree.structure(new_state) == jax.tree.structure(
        state), phase
  eval_batch = dict(batch, mask=jax.ShapeDtypeStruct((batch_size,), jnp.bool_))
  jax.eval_shape(evaluator.make_eval_step(system), state, eval_batch)


# -- (c) configs written before a field existed -----------------------------

# base_config's fields in its first form (the first training run's
# config.json), as dotted paths of its values.
FIRST_FORM = frozenset({
    "system", "dataset", "eval_dataset", "data_dir", "image_size",
    "batch_size", "worker_count", "num_train_steps", "seed", "compute_dtype",
    "log_every_steps", "image_every_steps", "num_grid_images",
    "checkpoint_every_steps", "keep_checkpoints", "eval_every_steps",
    "num_eval_images", "eval_batch_size", "generator.name",
    "discriminator.name", "loss.gan_mode", "loss.l1_weight",
    "optimizer.learning_rate", "optimizer.b1", "optimizer.b2",
    "optimizer.constant_steps", "optimizer.decay_steps",
})


def _leaf_paths(config, prefix: str = "") -> set[str]:
  paths = set()
  for key, value in config.items():
    if hasattr(value, "items"):
      paths |= _leaf_paths(value, f"{prefix}{key}.")
    else:
      paths.add(prefix + key)
  return paths


def _system_newer_fields() -> set[str]:
  return {path for name in systems.names()
          for path in systems.get_class(name).newer_fields}


def test_every_field_added_to_the_base_is_filled_for_older_configs():
  """A field added to `base_config` must be named in NEWER_FIELDS (or in
  the newer_fields of the systems that read it), or an older config.json
  would fail, or be read with another value, wherever the field is read."""
  newer = (*config_fields.NEWER_FIELDS, *_system_newer_fields())
  unfilled = {path for path in _leaf_paths(configuration.base_config())
              if path not in FIRST_FORM
              and not any(path == n or path.startswith(n + ".")
                          for n in newer)}
  assert not unfilled, (
      f"base_config fields {sorted(unfilled)} are not in "
      "config_fields.NEWER_FIELDS (nor a system's newer_fields)")
  base = configuration.base_config()
  for path in newer:  # Each names a field of the base, whose value is read.
    config_fields.field(base, path)


def _strip(config_dict: dict, paths) -> dict:
  """A copy of the JSON-like `config_dict` without the fields `paths`."""
  stripped = copy.deepcopy(config_dict)
  for path in paths:
    *parents, key = path.split(".")
    section = stripped
    for parent in parents:
      section = section.get(parent, {})
    section.pop(key, None)
  return stripped


@pytest.mark.parametrize("path", [p.relative_to(REPO) for p in CONFIG_FILES],
                         ids=str)
def test_an_older_config_gets_the_newer_fields_at_their_defaults(path):
  """Every field added since the first form, taken out of each smoke
  config, comes back at its base_config value, and nothing else changes:
  no section a system dropped or replaced (iizuka's loss, classify's
  networks) gains a field."""
  config = _get_config(REPO / path, SMOKE)
  cls = systems.get_class(config.system)
  newer = (*config_fields.NEWER_FIELDS, *cls.newer_fields)
  before = config.to_dict()
  old = ml_collections.ConfigDict(_strip(before, newer))
  filled = config_fields.fill_newer_fields(old, cls.newer_fields)
  assert set(filled) == {p for p in newer if p.split(".")[0] in before}
  base = configuration.base_config()
  after = old.to_dict()
  for p in filled:
    assert config_fields.field(old, p) == config_fields.field(base, p), p
  assert _strip(after, filled) == _strip(before, filled)
  assert _leaf_paths(old) == _leaf_paths(config)


# Fields of a pix2pix run's config.json that a run from before they existed
# lacks. conv_impl stays: its default, 'auto', would colorize through the CPU
# forms, the same function to rounding, where this test compares exactly.
OLD_RUN_LACKS = (*(p for p in config_fields.NEWER_FIELDS if p != "conv_impl"),
                 "loss.gan_weight", "loss.l1_warmup_steps", "optimizer.name")


def _photos(count: int = 2) -> list[np.ndarray]:
  paths = sorted((REPO / "jaxcolor" / "sample_data" / "eval").glob("*.jpg"))
  return [np.asarray(Image.open(p).convert("RGB")) for p in paths[:count]]


def test_an_older_run_and_artifact_load_and_colorize_as_they_did(tmp_path):
  """A run whose config.json predates generator_ema_ramp, the EMA, the
  test-time mode, gan_weight, ... (every NEWER_FIELDS field but
  conv_impl) colorizes as the same run with today's config.json, and so
  does its artifact with such a model.json."""
  config = helpers.load_config("configs/default.py")
  with config.unlocked():
    config.generator_ema_decay = 0.0  # As before the EMA: no EMA state.
  run = tmp_path / "run"
  helpers.make_checkpoint(config, run, steps=(3,))
  today = colorizer_lib.Colorizer.from_workdir(run, batch_size=2)
  expected = [today.colorize(photo) for photo in _photos()]

  config_json = run / "config.json"
  written = json.loads(config_json.read_text())
  old = _strip(written, OLD_RUN_LACKS)
  assert "generator_ema_ramp" not in old and "gan_weight" not in old["loss"]
  config_json.write_text(json.dumps(old))
  older = colorizer_lib.Colorizer.from_workdir(run, batch_size=2)
  assert older.config.generator_ema_ramp == "steps"
  assert older.config.loss.gan_weight == 1.0
  for photo, want in zip(_photos(), expected):
    np.testing.assert_array_equal(older.colorize(photo), want)

  artifact = tmp_path / "artifact"
  exporting.export(run, artifact)
  model_json = artifact / "model.json"
  meta = json.loads(model_json.read_text())
  meta["config"] = _strip(meta["config"], OLD_RUN_LACKS)
  model_json.write_text(json.dumps(meta))
  from_artifact = colorizer_lib.Colorizer.from_pretrained(artifact,
                                                          batch_size=2)
  for photo, want in zip(_photos(), expected):
    np.testing.assert_array_equal(from_artifact.colorize(photo), want)


def test_a_missing_field_without_default_is_named():
  """A system's own field has no fallback: a config without it stops at
  creation, naming it."""
  config = _get_config(REPO / "configs/pix2pix_improver.py", SMOKE)
  with config.loss.unlocked():
    del config.loss["discriminator_fake"]
  with pytest.raises(config_fields.MissingField,
                     match=r"config\.loss\.discriminator_fake is missing: "
                     "the pix2pix_improver system reads it"):
    systems.create(config)
