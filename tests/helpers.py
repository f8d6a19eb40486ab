"""Helpers shared by the tests: configs, batches, sharded steps and their
comparison across device counts, the check that a trained run colorizes, a
local HTTP server for downloads.

Imported as `import helpers` (pytest puts tests/ on sys.path: it is not a
package).
"""

import contextlib
import functools
import http.server
import importlib.util
import json
import threading
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from jaxcolor import systems
from jaxcolor.core import parallel
from jaxcolor.training import experiment
from jaxcolor.training import train_step

REPO = Path(__file__).resolve().parents[1]


def load_config(path: str, arg: str | None = "smoke"):
  """`get_config(arg)` of the config file at `path` (relative to the repo)."""
  spec = importlib.util.spec_from_file_location("cfg", REPO / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def random_batch(batch_size: int, size: int, seed: int = 0,
                 num_classes: int = 0) -> dict:
  """uint8 RGB photos [B, H, W, 3] under 'image', and with `num_classes`
  random int32 labels [B] under 'label'."""
  rng = np.random.default_rng(seed)
  # Smooth random color fields: more like photos than white noise.
  low = rng.integers(0, 256, (batch_size, size // 8, size // 8, 3))
  image = np.kron(low, np.ones((1, 8, 8, 1))).astype(np.uint8)
  if not num_classes:
    return {"image": image}
  return {"image": image,
          "label": rng.integers(0, num_classes, (batch_size,)).astype(np.int32)}


def init_host_state(config):
  """`config`'s initial state on the host, drawn as `run_steps` draws it:
  initialize once, then start several runs from it."""
  system = systems.create(config)
  init_rng = jax.random.split(jax.random.key(config.seed))[0]
  with jax.threefry_partitionable(False):  # As experiment.initial_state.
    return jax.device_get(jax.jit(system.init)(init_rng))


def run_steps(config, devices, num_steps: int, initial_state=None,
              num_classes: int = 0):
  """`num_steps` jitted steps of `config`'s system on a mesh of `devices`,
  each in the phase `system.phase` gives its step (as the training loop).

  `initial_state`: the values to start from (e.g. `init_host_state`'s, from
  another instance of the same system; its 'step' picks the first phase);
  by default the system's own initialization, as in training.
  `num_classes`: > 0 gives the batches labels (`random_batch`).
  Returns (final state on the host, metrics of every step).
  """
  system = systems.create(config)
  mesh = parallel.make_mesh(devices)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  abstract = jax.eval_shape(system.init, init_rng)
  if initial_state is None:
    _, sharding = train_step.jit_train_step(system, mesh, abstract)
    state = experiment.initial_state(system, sharding, init_rng)
  else:  # Its values, in this system's tree (static fields are per system).
    sharding = jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
    state = jax.device_put(jax.tree.unflatten(
        jax.tree.structure(abstract), jax.tree.leaves(initial_state)), sharding)
  step_rng = parallel.replicate(step_rng, mesh)
  first = int(jax.device_get(state["step"]))
  steps, history = {}, []
  for i in range(num_steps):
    phase = system.phase(first + i)
    if phase not in steps:
      steps[phase], _ = train_step.jit_train_step(system, mesh, abstract,
                                                  phase)
    batch = parallel.global_batch(
        random_batch(config.batch_size, config.image_size, seed=i,
                     num_classes=num_classes), mesh)
    state, metrics = steps[phase](state, batch, step_rng)
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


# -- the same step on 8 devices and on 1 --------------------------------------
#
# Sharding must not change what a step computes: the batch's gradients, its
# batch-norm statistics and its losses. Rounding does change, since the sums
# over the sharded batch are all-reduced in another order, so the runs are
# compared tensor by tensor, relative to the one-device value, with a
# tolerance each system's test states and justifies by measurement.
#
# What is compared is what the step computes before any optimizer
# arithmetic. Adam (the GANs' optimizer) would hide it: its first step moves
# every element by about lr * sign(g), so a near-zero gradient's rounding
# becomes a whole step of that element, and a tensor whose gradient is zero
# up to rounding is all noise. So the comparisons run with plain SGD
# (`with_plain_sgd`), momentum 0: its state after a step, optax's trace,
# holds the step's gradient itself. The parameters are not compared: they
# moved by -lr times those gradients, and the float32 rounding of p - lr * g
# (up to 1.5e-4 of the change, measured) says nothing about the step.


def plain_sgd(learning_rate: float):
  """An optimizer section of plain SGD at a constant `learning_rate`, its
  momentum 0 (optax's trace, the state, is then the last gradient)."""
  return ml_collections.ConfigDict({
      "name": "sgd", "learning_rate": learning_rate, "momentum": 0.0,
      "weight_decay": 0.0, "warmup_steps": 0, "nesterov": False})


def with_plain_sgd(config, learning_rate: float):
  """`config` with every optimizer section (`optimizer`, and a staged
  system's `stages.pretrain_optimizer`) replaced by `plain_sgd`."""
  config = config.copy_and_resolve_references()
  config.optimizer = plain_sgd(learning_rate)
  if "stages" in config:
    config.stages.pretrain_optimizer = plain_sgd(learning_rate)
  return config


def step_errors(run_a, run_b, initial_state) -> dict[str, float]:
  """What two `run_steps` results from `initial_state`, run with
  `plain_sgd`, computed, compared: {name: relative error}, with names

    'metric <key> (step <i>)'  |a - b| / |b|, each metric of each step;
    '<path>.trace...'          each gradient tensor (SGD's trace):
                               ||g_a - g_b|| / ||g_b||;
    '<path>.batch_stats...'    each batch-norm statistic, by the change the
                               steps made to it from `initial_state`
                               ((1 - momentum) * (batch's - running)):
                               ||delta_a - delta_b|| / ||delta_b||.

  In float64. A value that is exactly 0 in `run_b` (the gradient of a
  network the phase does not train) must be exactly 0 in `run_a` too
  (error 0, else inf). Integer leaves (step counts) must be equal.
  """
  (state_a, metrics_a), (state_b, metrics_b) = run_a, run_b
  assert len(metrics_a) == len(metrics_b)
  errors = {}

  def relative(a, b) -> float:
    norm = np.linalg.norm(b)
    if norm == 0:
      return 0.0 if not np.any(a) else float("inf")
    return float(np.linalg.norm(a - b) / norm)

  for step, (m_a, m_b) in enumerate(zip(metrics_a, metrics_b)):
    assert set(m_a) == set(m_b)
    for key in m_b:
      errors[f"metric {key} (step {step})"] = relative(
          np.float64(m_a[key]), np.float64(m_b[key]))
  leaves_0 = jax.tree.leaves(initial_state)
  leaves_a = jax.tree_util.tree_leaves_with_path(state_a)
  leaves_b = jax.tree.leaves(state_b)
  assert len(leaves_0) == len(leaves_a) == len(leaves_b)
  gradients = 0
  for (path, a), b, x0 in zip(leaves_a, leaves_b, leaves_0):
    name = jax.tree_util.keystr(path)
    if not np.issubdtype(np.asarray(b).dtype, np.floating):
      assert np.array_equal(a, b), name
    elif ".trace" in name:
      errors[name] = relative(np.asarray(a, np.float64),
                              np.asarray(b, np.float64))
      gradients += 1
    elif ".batch_stats" in name:
      x0 = np.asarray(x0, np.float64)
      errors[name] = relative(np.asarray(a, np.float64) - x0,
                              np.asarray(b, np.float64) - x0)
  assert gradients, "no SGD trace in the state: run with with_plain_sgd"
  return errors


def assert_same_steps(run_a, run_b, initial_state, rtol: float) -> None:
  """Every one of `step_errors` below `rtol`, and both runs took their
  steps from `initial_state`."""
  errors = step_errors(run_a, run_b, initial_state)
  worst = max(errors, key=errors.get)
  assert errors[worst] < rtol, (worst, errors[worst], rtol)
  steps = int(initial_state["step"]) + len(run_b[1])
  assert int(run_a[0]["step"]) == int(run_b[0]["step"]) == steps


def assert_colorization_follows_input(workdir, output: str | None = None,
                                      min_ab: float = 1e-2) -> None:
  """The run in `workdir` colorizes: its network's a*b* of two different
  photos (`random_batch`'s smooth color fields, gray to the network) are
  finite, not all zero, vary across each photo, and differ between them.

  A smoke run that only checks its logs and files passes with a generator
  that outputs zeros (the gray photo back) or ignores its input; this does
  not. `min_ab`: in Lab units (a*b* span about +-110); a zero or blind
  generator gives 0, up to rounding, in one of the three.
  """
  from jaxcolor.inference import colorizer  # noqa: PLC0415

  run = colorizer.Colorizer.from_workdir(workdir, batch_size=2, output=output)
  ab = run.network_ab(random_batch(2, run.image_size, seed=7)["image"])
  assert ab.shape == (2, run.image_size, run.image_size, 2), ab.shape
  assert np.all(np.isfinite(ab))
  assert np.abs(ab).mean() > min_ab, ("all zero", np.abs(ab).mean())
  spread = ab.std(axis=(1, 2)).max(axis=-1).min()  # Per photo and channel.
  assert spread > min_ab, ("the same color everywhere", spread)
  between = np.abs(ab[0] - ab[1]).mean()
  assert between > min_ab, ("the same colors for two photos", between)


def make_checkpoint(config, workdir: Path, steps=(3, 6), seed: int = 0) -> None:
  """A run directory as training leaves it (config.json, checkpoints/<step>
  with the 'state' item) for evaluation and colorization tests that need a
  checkpoint, not training. The state is numpy-filled from `jax.eval_shape`
  (nothing compiles): kernels N(0, 0.02), batch-norm scales and variances 1,
  other floats small, integers 0."""
  from jaxcolor.training import checkpointing  # noqa: PLC0415

  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  system = systems.create(config)
  abstract = jax.eval_shape(system.init, jax.random.key(config.seed))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if not np.issubdtype(leaf.dtype, np.floating):
      return np.zeros(leaf.shape, leaf.dtype)
    if name.endswith("['scale']") or name.endswith("['var']"):
      return np.ones(leaf.shape, leaf.dtype)
    scale = 0.02 if name.endswith("['kernel']") else 0.001
    return rng.normal(0.0, scale, leaf.shape).astype(leaf.dtype)

  state = jax.tree_util.tree_map_with_path(fill, abstract)
  checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=10,
                                            asynchronous=False)
  for step in steps:
    checkpointer.save(step, state, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()


def train_lines(workdir) -> dict[int, dict]:
  """metrics.jsonl's training lines by step (each step logged once)."""
  lines = [json.loads(line) for line in
           (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [line["step"] for line in lines if "generator_loss" in line]
  assert len(steps) == len(set(steps)), f"a step logged twice: {steps}"
  return {line["step"]: line for line in lines if "generator_loss" in line}


@contextlib.contextmanager
def one_device_mesh():
  """Meshes built without explicit devices take one of the 8 simulated ones.

  For tests about what a run does, not how it is sharded (sharding has its
  own tests: one step on 8 devices against 1, per system): the 8-device
  programs compile several times slower on a CPU.
  """
  make_mesh = parallel.make_mesh
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(parallel, "make_mesh",
                  lambda devices=None: make_mesh(devices or jax.devices()[:1]))
    yield


# -- a local HTTP server for downloads -----------------------------------------


class RangeFiles(http.server.SimpleHTTPRequestHandler):
  """Serves a folder with HTTP Range support, answering 416 for a range
  past the end; `cut_after` bytes ends the next response early (a dropped
  connection), `pause` seconds between 64 KiB pieces keep two downloads
  overlapping. `requests`: (Range header, status) of each request."""
  cut_after = None
  pause = 0.0
  requests: list = []

  def log_message(self, *args):
    pass

  def do_GET(self):
    path = Path(self.translate_path(self.path))
    if not path.is_file():
      self.send_error(404)
      return
    data = path.read_bytes()
    header = self.headers.get("Range")
    start = int(header.split("=")[1].split("-")[0]) if header else 0
    if start >= len(data) and header:
      type(self).requests.append((header, 416))
      self.send_response(416)
      self.send_header("Content-Range", f"bytes */{len(data)}")
      self.send_header("Content-Length", "0")
      self.end_headers()
      return
    type(self).requests.append((header, 206 if header else 200))
    self.send_response(206 if header else 200)
    if header:
      self.send_header("Content-Range",
                       f"bytes {start}-{len(data) - 1}/{len(data)}")
    self.send_header("Content-Length", str(len(data) - start))
    self.end_headers()
    body = data[start:]
    if type(self).cut_after is not None:
      body, type(self).cut_after = body[:type(self).cut_after], None
    for i in range(0, len(body), 1 << 16):
      self.wfile.write(body[i:i + (1 << 16)])
      time.sleep(type(self).pause)


@contextlib.contextmanager
def serve_folder(directory):
  """The URL of a `RangeFiles` server of `directory` on 127.0.0.1, its
  class settings reset."""
  handler = functools.partial(RangeFiles, directory=str(directory))
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  RangeFiles.requests, RangeFiles.cut_after, RangeFiles.pause = [], None, 0.0
  try:
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
  finally:
    httpd.shutdown()
    httpd.server_close()
