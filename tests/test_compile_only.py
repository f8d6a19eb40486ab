"""Every system compiled for a TPU slice on this CPU (jaxcolor/benchmarking/compile_only.py).

libtpu comes with the test extra, so these run in CI: XLA's TPU compiler
compiles each system's smoke training step for a v5e 2x2 slice, and the
reports carry the memory, cost, collectives and roofline fields that
`jaxcolor benchmark --topology` prints.
"""

import json
import math
import os
import subprocess
import sys

import jax
import pytest

import helpers
from jaxcolor.benchmarking import chips
from jaxcolor.benchmarking import compile_only
from jaxcolor.benchmarking import roofline
from jaxcolor.core import configuration
from jaxcolor.core.errors import ConfigError
from jaxcolor.runtime import platforms
from jaxcolor.training import experiment

TOPOLOGY = "v5e:2x2"
SYSTEM_CONFIGS = ("configs/pix2pix.py", "configs/pix2pix_improver.py",
                  "configs/resnet18_unet.py", "configs/dla_cdcgan.py",
                  "configs/iizuka.py")


@pytest.fixture(scope="module")
def devices():
  return compile_only.topology_devices(TOPOLOGY)


def _check_report(record, devices, batch):
  assert record["device_count"] == len(devices) == 4
  assert record["chip"] == "TPU v5e" and record["device_kind"] == "TPU v5 lite"
  assert record["global_batch"] == batch
  assert record["total_bytes"] == (record["argument_bytes"]
                                   + record["output_bytes"]
                                   - record["alias_bytes"]
                                   + record["temp_bytes"])
  assert 0 < record["total_bytes"] < record["hbm_bytes_per_device"]
  assert record["fits"] and record["headroom_bytes"] > 0
  assert record["flops_per_device"] > 0
  assert record["bytes_accessed_per_device"] > 0
  bound = record["step_time_bound_s"]
  assert bound == max(record["compute_bound_s"], record["memory_bound_s"],
                      record["collective_bound_s"] or 0.0)
  assert 0 < record["mfu_bound"] <= 1
  assert record["images_per_s_bound"] == pytest.approx(batch / bound)


@pytest.mark.parametrize("path", SYSTEM_CONFIGS)
def test_each_system_compiles_for_a_tpu_slice(path, devices):
  config = helpers.load_config(path)
  plan = compile_only.plan(config, TOPOLOGY, per_chip_batch=2,
                           devices=devices)
  assert plan.global_batch == 8 and plan.per_chip_batch == 2
  # The last phase only: a staged system's full step (every phase runs
  # the same code path).
  record, = compile_only.compile_programs(plan, ("train",),
                                          last_phase_only=True)
  last = compile_only.phases(plan.built.system,
                             plan.built.config.num_train_steps)[-1]
  assert record["program"] == f"train:{last}"
  _check_report(record, devices, 8)
  # Data parallelism: the gradients (and batch statistics) are all-reduced.
  kinds = {c["kind"]: c for c in record["collectives"]}
  assert kinds["all-reduce"]["count"] > 0
  parameter_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
      plan.built.abstract_state.params if hasattr(
          plan.built.abstract_state, "params") else
      plan.built.abstract_state))
  assert kinds["all-reduce"]["bytes"] <= parameter_bytes


def test_every_program_of_a_system_reports(devices):
  config = helpers.load_config("configs/pix2pix.py")
  plan = compile_only.plan(config, TOPOLOGY, per_chip_batch=2,
                           devices=devices)
  records = list(compile_only.compile_programs(plan))
  assert [r["program"] for r in records] == ["train:train", "eval",
                                             "colorize"]
  for record in records:
    _check_report(record, devices, record["global_batch"])
    assert record["compile_s"] > 0
    assert record["chip_figures"]["source"].startswith("https://")
  # The colorize program has no collectives: images are independent.
  assert records[2]["collectives"] == []


def test_auto_gives_a_tpu_xla_convolutions(devices):
  """'auto' is resolved for the devices the experiment is built on, not
  for the host that compiles."""
  config = helpers.load_config("configs/pix2pix.py")
  config.conv_impl = "auto"  # The smoke preset's is 'xla'.
  on_tpu = experiment.build(config.copy_and_resolve_references(),
                            data="none", devices=devices)
  assert on_tpu.system.platform == "tpu"
  assert on_tpu.system.build_network("generator").conv_backend is None
  on_cpu = experiment.build(config.copy_and_resolve_references(),
                            data="none", devices=jax.devices()[:1])
  assert on_cpu.system.build_network("generator").conv_backend is not None


def test_a_pod_takes_a_one_host_config_by_its_per_device_batch():
  config = helpers.load_config("configs/pix2pix.py", None)
  pod = compile_only.topology_devices("v5e:16x16")
  with pytest.raises(ConfigError, match="per_device_batch_size"):
    experiment.build(config.copy_and_resolve_references(), data="none",
                     devices=pod)
  config.per_device_batch_size = 4
  built = experiment.build(config, data="none", devices=pod)
  assert built.config.batch_size == 4 * 256
  # Evaluation masks padded rows: its batch rounds up to the device count.
  assert built.config.eval_batch_size == 256
  # The config's pod preset: 64 per chip, whatever the slice.
  preset = helpers.load_config("configs/pix2pix.py", "pod")
  built = experiment.build(preset, data="none", devices=pod[:16])
  assert built.config.batch_size == 64 * 16
  assert built.config.compute_dtype == "bfloat16"


def test_scale_batch_sizes_keeps_a_global_batch_unless_asked():
  config = configuration.base_config()
  config.batch_size, config.eval_batch_size = 12, 10
  configuration.scale_batch_sizes(config, 4)
  assert (config.batch_size, config.eval_batch_size) == (12, 12)
  config.per_device_batch_size = 3
  configuration.scale_batch_sizes(config, 8)
  assert (config.batch_size, config.eval_batch_size) == (24, 16)
  config.per_device_batch_size = -1
  with pytest.raises(ConfigError, match="per_device_batch_size"):
    configuration.validate(config, device_count=8)


def test_unknown_chip_is_named():
  with pytest.raises(ConfigError, match="v9z"):
    chips.for_topology("v9z:2x2")


def test_collectives_are_counted_with_their_result_bytes():
  hlo = """
  %ar = (f32[16]{0:T(128)}, bf16[4,8]{1,0}) all-reduce(%a, %b), channel_id=1
  %ars = f32[1024]{0} all-reduce-start(%c), channel_id=2
  %ard = f32[1024]{0} all-reduce-done(%ars)
  %ag = (f32[8]{0}, f32[32]{0}) all-gather-start(%d), dimensions={0}
  %agd = f32[32]{0} all-gather-done(%ag)
  %gte = f32[16]{0} get-tuple-element(%ar), index=0
  """
  found = {c["kind"]: c for c in roofline.collectives(hlo)}
  assert found["all-reduce"] == {"kind": "all-reduce", "count": 2,
                                 "bytes": 16 * 4 + 32 * 2 + 1024 * 4}
  assert found["all-gather"] == {"kind": "all-gather", "count": 1,
                                 "bytes": 32 * 4}
  assert set(found) == {"all-reduce", "all-gather"}


@pytest.mark.parametrize("needed", [
    lambda b: 1e9 + 3.3e7 * b,              # linear in the batch
    lambda b: 1e9 + 3.3e7 * b + 1e5 * b * b,  # a little worse than linear
    lambda b: 2e9 * b,                      # only batch 8 fits
])
def test_largest_batch_search_finds_the_boundary(needed):
  available = 16e9
  measured = []

  def measure(batch):
    measured.append(batch)
    return needed(batch), available

  largest, not_fitting = compile_only.search_largest(measure, start=16,
                                                     limit=4096)
  assert not_fitting == largest + 1
  assert needed(largest) <= available < needed(largest + 1)
  assert len(measured) == len(set(measured)) <= 10


def test_largest_batch_search_bisects_past_a_refused_compile():
  # Memory grows by 30 MB an image until 400 images, where the compiler
  # refuses the program (measured as infinitely large).
  def measure(batch):
    return (1e9 + 3e7 * batch if batch < 400 else math.inf), 16e9

  low, high = compile_only.search_largest(measure, start=16, limit=4096)
  assert (low, high) == (399, 400)


def test_largest_batch_search_stops_at_its_limit_and_at_nothing():
  assert compile_only.search_largest(lambda b: (b, 1e9), start=16,
                                     limit=40) == (40, 41)
  assert compile_only.search_largest(lambda b: (b * 1e9, 0.5e9), start=16,
                                     limit=40) == (0, 1)


def test_largest_batch_search_within_a_budget_reuses_what_is_known():
  measured = []

  def measure(batch):
    measured.append(batch)
    return 1e9 + 3.3e7 * batch + 1e5 * batch * batch, 16e9

  low, high = compile_only.search_largest(
      measure, start=16, limit=4096, max_measures=2,
      known={16: measure(16)})
  assert measured[0] == 16 and 16 not in measured[1:]
  assert len(measured) == 3  # the known one, then the budget's two
  assert measure(low)[0] <= 16e9 < measure(high)[0] and low < high


def test_libtpu_stays_quiet_and_unloaded_on_a_machine_without_a_tpu(tmp_path):
  """With libtpu installed, a command on this TPU-less machine starts JAX
  on the CPU alone: no libtpu lines, and no libtpu lock taken."""
  if platforms.accelerator_attached():
    pytest.skip("this machine has an accelerator")
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  code = ("from jaxcolor.runtime import platforms; "
          "assert platforms.pin_cpu_without_accelerators(); import jax; "
          "print(jax.devices()[0].platform)")
  out = subprocess.run([sys.executable, "-c", code], env=env,
                       capture_output=True, text=True, timeout=120,
                       check=True)
  assert out.stdout.strip() == "cpu"
  assert "TPU" not in out.stderr and "libtpu" not in out.stderr


def test_benchmark_command_prints_one_json_line_per_program(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "jaxcolor.benchmark", "--config",
       "configs/pix2pix.py:smoke", "--topology", TOPOLOGY,
       "--per_chip_batch", "1", "--programs", "colorize"],
      capture_output=True, text=True, timeout=600, check=True,
      cwd=helpers.REPO)
  lines = [json.loads(line) for line in out.stdout.splitlines()
           if line.startswith("{")]
  assert [r["program"] for r in lines] == ["colorize"]
  assert lines[0]["topology"] == TOPOLOGY and lines[0]["fits"]
  # libtpu's start-up lines went to the log, not the console.
  assert "TPU_WORKER_HOSTNAMES" not in out.stderr
