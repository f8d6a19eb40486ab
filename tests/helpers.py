"""Helpers shared by the tests: configs, batches, sharded steps, a local
HTTP server for downloads.

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
import numpy as np
import pytest

from jaxcolor import experiment
from jaxcolor import parallel
from jaxcolor import systems
from jaxcolor import train_step

REPO = Path(__file__).resolve().parents[1]


def load_config(path: str, arg: str | None = "smoke"):
  """`get_config(arg)` of the config file at `path` (relative to the repo)."""
  spec = importlib.util.spec_from_file_location("cfg", REPO / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def random_batch(batch_size: int, size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  # Smooth random color fields: more like photos than white noise.
  low = rng.integers(0, 256, (batch_size, size // 8, size // 8, 3))
  image = np.kron(low, np.ones((1, 8, 8, 1))).astype(np.uint8)
  return {"image": image}


def init_host_state(config):
  """`config`'s initial state on the host, drawn as `run_steps` draws it:
  initialize once, then start several runs from it."""
  system = systems.create(config)
  init_rng = jax.random.split(jax.random.key(config.seed))[0]
  with jax.threefry_partitionable(False):  # As experiment.init_state.
    return jax.device_get(jax.jit(system.init)(init_rng))


def run_steps(config, devices, num_steps: int, initial_state=None):
  """`num_steps` jitted steps of `config`'s system on a mesh of `devices`.

  `initial_state`: the values to start from (e.g. `init_host_state`'s, from
  another instance of the same system); by default the system's own
  initialization, as in training.
  Returns (final state on the host, metrics of every step).
  """
  system = systems.create(config)
  mesh = parallel.make_mesh(devices)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  abstract = jax.eval_shape(system.init, init_rng)
  step_fn, sharding = train_step.jit_train_step(system, mesh, abstract)
  if initial_state is None:
    state = experiment.init_state(system, sharding, init_rng)
  else:  # Its values, in this system's tree (static fields are per system).
    state = jax.device_put(jax.tree.unflatten(
        jax.tree.structure(abstract), jax.tree.leaves(initial_state)), sharding)
  step_rng = parallel.replicate(step_rng, mesh)
  history = []
  for i in range(num_steps):
    batch = parallel.global_batch(random_batch(config.batch_size,
                                               config.image_size, seed=i), mesh)
    state, metrics = step_fn(state, batch, step_rng)
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def assert_same_steps(run_a, run_b, networks, rtol: float = 1e-5,
                      step_size: float | None = None,
                      max_outliers: float = 1e-3) -> None:
  """Two `run_steps` results agree: metrics to `rtol`, and every parameter
  and batch-norm tensor of `networks` to `rtol` relative to its norm.

  Per tensor, relative to its norm: an all-reduce sums in another order, and
  Adam turns a last-bit difference in a near-zero gradient into a visible
  one in that single element, so element-wise tolerance would test rounding.

  `step_size` (Adam's learning rate), for one step from the same state:
  Adam's first step moves each element by lr * g / (|g| + eps), and where a
  gradient is zero up to rounding (a few elements of a deep batch-normalized
  network such as the DLA generator) that step is rounding too, anywhere in
  [-lr, lr], and no per-tensor tolerance holds for small tensors. Then the
  parameters are compared element by element: every step must agree to 1 %
  of `step_size`, except at most `max_outliers` of a network's elements. A
  real difference (per-device gradients) moves far more elements.
  """
  (state_a, metrics_a), (state_b, metrics_b) = run_a, run_b
  assert len(metrics_a) == len(metrics_b)
  for m_a, m_b in zip(metrics_a, metrics_b):
    assert set(m_a) == set(m_b)
    for key in m_b:
      np.testing.assert_allclose(m_a[key], m_b[key], rtol=rtol, atol=1e-6,
                                 err_msg=key)
  assert_networks_close(state_a, state_b, networks, rtol, step_size,
                        max_outliers)
  assert int(state_a["step"]) == int(state_b["step"]) == len(metrics_b)


def assert_networks_close(state_a, state_b, networks, rtol: float = 1e-5,
                          step_size: float | None = None,
                          max_outliers: float = 1e-3) -> None:
  """The parameters and batch statistics of `networks` agree, as
  `assert_same_steps` says."""
  for name in networks:
    outliers, size = 0, 0
    for part in ("params", "batch_stats"):
      leaves_b = jax.tree.leaves(getattr(state_b[name], part))
      leaves_a = jax.tree_util.tree_leaves_with_path(
          getattr(state_a[name], part))
      assert len(leaves_a) == len(leaves_b), name
      for (path, a), b in zip(leaves_a, leaves_b):
        where = (part, name, jax.tree_util.keystr(path))
        if step_size is not None and part == "params":
          outliers += int(np.sum(np.abs(a - b) > 0.01 * step_size))
          size += b.size
          continue
        error = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
        assert error < rtol, (*where, error)
    assert outliers <= max_outliers * max(size, 1), (name, outliers, size)


def make_checkpoint(config, workdir: Path, steps=(3, 6), seed: int = 0) -> None:
  """A run directory as training leaves it (config.json, checkpoints/<step>
  with the 'state' item) for evaluation and colorization tests that need a
  checkpoint, not training. The state is numpy-filled from `jax.eval_shape`
  (nothing compiles): kernels N(0, 0.02), batch-norm scales and variances 1,
  other floats small, integers 0."""
  from jaxcolor import checkpointing  # noqa: PLC0415

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
