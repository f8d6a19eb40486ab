"""`python -m jaxcolor.benchmark`: its JSON line, its FLOP count, its peaks."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, load_config
from jax import lax

from jaxcolor import systems
from jaxcolor.benchmarking import colorize_timing
from jaxcolor.benchmarking import flops as flops_lib
from jaxcolor.benchmarking import step_timing
from jaxcolor.training import experiment

REQUIRED = ("step_time_s", "images_per_s", "compile_s", "flops_per_step",
            "model_flops_per_step", "tflops_per_s", "mfu", "device_kind", "device_count",
            "host_peak_rss_bytes")


@pytest.mark.slow  # Minutes on 2 cores: `pytest -m slow tests`.
def test_benchmark_prints_one_json_line_last(tmp_path):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(
      [sys.executable, "-m", "jaxcolor.benchmark", "--config",
       f"{REPO / 'configs/pix2pix.py'}:smoke", "--steps=3", "--warmup=1",
       "--input_pipeline", "--input_batches=2"],
      capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  for key in REQUIRED:
    assert key in report, key
  assert report["device_count"] == 2 and report["device_kind"] == "cpu"
  assert report["mfu"] is None  # No known peak for a CPU.
  assert 0 < report["step_time_min_s"] <= report["step_time_s"]
  np.testing.assert_allclose(report["images_per_s"],
                             8 / report["step_time_s"], rtol=1e-9)
  np.testing.assert_allclose(
      report["tflops_per_s"],
      report["model_flops_per_step"] / report["step_time_s"] / 1e12,
      rtol=1e-9)
  assert report["losses_finite"]
  # The input pipeline: 2 batches of the sample at 32 px after a warm-up one.
  assert report["input_images"] == 16 and report["input_images_per_cpu_s"] > 0
  np.testing.assert_allclose(
      report["input_cores_needed"],
      report["images_per_s"] / report["input_images_per_cpu_s"], rtol=1e-9)


def test_flops_come_from_xla_and_count_the_step():
  # XLA counts 2 FLOPs per multiply-add that reaches the input (taps on the
  # zero padding are not counted): here 14 of the 16 rows and columns.
  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((4, 4, 3, 5))
  conv = jax.jit(lambda x, w: lax.conv_general_dilated(
      x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
  flops = flops_lib.compiled_cost(conv.lower(x, w).compile())["flops"]
  assert flops == 2 * 2 * (14 * 14) * 3 * 5


def test_model_flops_count_direct_convolutions_whatever_the_form(
    monkeypatch):
  """`model_flops_per_step` (what rates and MFU divide) is the step's count
  with XLA's own convolutions; Winograd's forms change what is executed
  (`flops_per_step`: fewer products at the real sizes, more at the smoke
  test's 32 px, where partial tiles are padded) but not the model's count."""
  from jaxcolor import backends  # noqa: PLC0415
  from jaxcolor.backends.xla_cpu import CpuConvForms  # noqa: PLC0415
  config = load_config("configs/pix2pix.py", "smoke")
  config.conv_impl = "cpu"
  direct = step_timing.time_train_step(config, steps=0, warmup=0)
  everywhere = CpuConvForms(winograd_min_channels=1, winograd_min_grid=1)
  monkeypatch.setattr(backends, "select", lambda conv_impl, platform: (
      everywhere if backends.resolve(conv_impl, platform) == "cpu" else None))
  fewer = step_timing.time_train_step(config, steps=0, warmup=0)
  assert fewer["model_flops_per_step"] == direct["model_flops_per_step"]
  assert fewer["flops_per_step"] != direct["flops_per_step"]
  assert direct["model_flops_per_step"] > 0


@pytest.mark.parametrize("kind,dtype,expected", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
    ("NVIDIA H100 PCIe", "bfloat16", 756e12),
    ("NVIDIA H100 80GB HBM3", "float32", 494e12),
    ("NVIDIA H200", "bfloat16", 989e12),
    ("TPU v5 lite", "bfloat16", 197e12),
    ("cpu", "float32", None),
])
def test_peak_flops(kind, dtype, expected):
  assert flops_lib.peak_flops(kind, dtype) == expected


@pytest.mark.parametrize("path", sorted(
    str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.py")))
def test_synthetic_batch_feeds_every_systems_step(path):
  # Traced only (shapes): the benchmark's batch has every key and shape the
  # config's training step reads (the classifier's labels included).
  config = load_config(path)
  system = systems.create(config)
  state = jax.eval_shape(system.init, jax.random.key(0))
  batch = step_timing.synthetic_batch(config)
  for phase in {system.phase(0), system.phase(config.num_train_steps - 1)}:
    _, metrics = jax.eval_shape(system.phase_train_step(phase), state, batch,
                                jax.random.key(1))
    assert metrics
  if "label" in batch:
    assert batch["label"].max() < config.classifier.num_classes


def test_colorize_timing_covers_every_stage(tmp_path):
  """`--colorize`: the network alone, the six stages and the pipelined path
  over every photo of the folder (an unreadable one is not counted)."""
  photos = sorted((REPO / "jaxcolor" / "sample_data" / "eval").glob("*.jpg"))[:5]
  for photo in photos:
    (tmp_path / photo.name).write_bytes(photo.read_bytes())
  (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
  config = load_config("configs/cpu_budget.py", "smoke")
  report = colorize_timing.time_colorize(config, str(tmp_path), batch_size=2,
                                   steps=2)
  assert report["colorize_images"] == 5
  assert set(report["stage_s_per_image"]) == {
      "decode", "resize", "network", "upsample", "recombine", "encode"}
  assert all(t > 0 for t in report["stage_s_per_image"].values())
  np.testing.assert_allclose(report["network_images_per_s"],
                             2 / report["network_batch_s"], rtol=1e-9)
  np.testing.assert_allclose(report["end_to_end_images_per_s"],
                             5 / report["end_to_end_s"], rtol=1e-9)


def test_inference_times_the_network_alone_with_its_flops():
  """`--inference`: no folder, no training step; XLA's FLOP count of the
  colorize program grows with the batch (the network is per image)."""
  config = load_config("configs/cpu_budget.py", "smoke")
  # Batches 2 and 4: at batch 1 XLA's cost analysis counts the patch
  # product of the first layer (one input channel) 1.5 % lower.
  reports = [step_timing.run(config, steps=2, warmup=0, input_pipeline=False,
                           input_batches=0, inference=True, colorize_batch=b)
             for b in (2, 4)]
  for batch, report in zip((2, 4), reports):
    assert "step_time_s" not in report and "colorize_folder" not in report
    assert report["colorize_batch"] == batch
    assert report["network_cpu_time_s"] > 0
    assert 0 < report["network_batch_min_s"] <= report["network_batch_s"]
  for key in ("network_flops_per_batch", "network_model_flops_per_batch"):
    np.testing.assert_allclose(reports[1][key], 2 * reports[0][key],
                               rtol=0.01)


@pytest.mark.slow
def test_cpu_step_vs_torch_times_both_in_their_own_processes(tmp_path):
  pytest.importorskip("torch")  # benchmarks/ needs it; the package does not.
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(
      [sys.executable, str(REPO / "benchmarks/cpu_step_vs_torch.py"),
       "--image_size=32", "--batch_size=2", "--threads=1", "--rounds=2",
       "--steps=1", "--warmup=0", "--one_process"],
      capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  both = report["two_processes"]
  assert len(both["jax_step_times_s"]) == len(both["torch_step_times_s"]) == 2
  np.testing.assert_allclose(
      both["jax_over_torch"],
      both["jax_step_time_s"] / both["torch_step_time_s"], rtol=1e-9)
  assert both["gflop_per_step"] > 0
  one = report["one_process"]
  assert one["jax_step_time_s"] > 0 and one["torch_step_time_s"] > 0
  # Each round's lines name both sides, in alternating order.
  rounds = [line for line in result.stderr.splitlines()
            if line.startswith("round ")]
  assert rounds[0].split()[2] == "jax" and rounds[1].split()[2] == "torch"


@pytest.mark.slow
def test_cpu_step_vs_torch_compares_inference_and_the_matmul_ceiling(tmp_path):
  pytest.importorskip("torch")
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(
      [sys.executable, str(REPO / "benchmarks/cpu_step_vs_torch.py"),
       "--image_size=32", "--batch_size=2", "--threads=1", "--rounds=1",
       "--steps=2", "--warmup=1", "--inference", "--ceiling"],
      capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["mode"] == "inference"
  both = report["two_processes"]
  for name in ("jax", "torch"):
    np.testing.assert_allclose(both[f"{name}_images_per_s"],
                               2 / both[f"{name}_step_time_s"], rtol=1e-9)
    assert report["ceiling"][f"{name}_matmul_gflops_per_s"] > 0
    assert 0 < both[f"{name}_share_of_matmul"]
  # The generator's forward pass at 32 px, batch 2: far less than a step.
  assert 0 < both["gflop_per_step"] < 10


def test_layer_forms_times_each_form_and_checks_the_tap_forms_agree(tmp_path):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(
      [sys.executable, str(REPO / "benchmarks/layer_forms.py"),
       "--batch_size=1", "--repeats=1"],
      capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  adjoint = lines.index(next(l for l in lines if l.startswith("adjoint")))
  # A header, then one row per shape: five numbers of ms and two rates.
  rows = lines[adjoint + 2:adjoint + 7]
  assert [row.split()[:3] for row in rows][0] == ["4", "1024", "512"]
  assert all(float(value.rstrip(",")) > 0 for row in rows
             for value in row.split()[3:])
  adam = lines.index(next(l for l in lines if l.startswith("adam")))
  layouts = lines[adam + 1:adam + 4]
  assert [l.split()[0] for l in layouts] == ["contiguous", "swapped", "swap"]
  assert all(float(l.split()[-1]) > 0 for l in layouts)
  # The taps table asserts the two tap forms agree before timing them.
  assert sum(l.strip().startswith(("32", "64", "4 ")) for l in lines
             if "->" in l) == 4
  wrong = subprocess.run(
      [sys.executable, str(REPO / "benchmarks/layer_forms.py"),
       "--tables=adjoint,nope"], capture_output=True, text=True,
      cwd=tmp_path, env=env, timeout=120)
  assert wrong.returncode == 2 and "unknown nope" in wrong.stderr


def test_conv_vs_torch_lists_the_step_convolutions_of_the_real_networks():
  # The layers it times are the pix2pix networks' own, with their shapes.
  sys.path.insert(0, str(REPO / "benchmarks"))
  try:
    import conv_vs_torch  # noqa: PLC0415
  finally:
    sys.path.pop(0)
  config = load_config("configs/pix2pix.py", None)
  config.image_size, config.generator.num_downsamplings = 64, 6
  built = experiment.build(config, data="none",
                           devices=jax.local_devices()[:1])
  params = {name: built.abstract_state[name].params
            for name in ("generator", "discriminator")}
  layers_listed = conv_vs_torch.step_layers(64)
  assert len(layers_listed) == 2 * 6 + 5
  for layer in layers_listed:
    network, name = layer.name.split()
    kernel = params["generator" if network == "G" else "discriminator"][
        name]["kernel"]
    assert kernel.shape == (4, 4, layer.inputs, layer.outputs), layer
  # down_0 reads the photo (no input gradient); the PatchGAN's weights
  # get gradients twice a step (real and fake), its inputs three times
  # but conv_0's once (only the generator's pass flows into the fake).
  passes = {l.name: (l.forward, l.input_grad, l.weight_grad)
            for l in layers_listed}
  assert passes["G down_0"] == (1, 0, 1) and passes["G up_0"] == (1, 1, 1)
  assert passes["D conv_0"] == (3, 1, 2) and passes["D conv_3"] == (3, 3, 2)
  times = conv_vs_torch.time_ours(layers_listed[1], batch=1, repeats=1)
  assert sorted(times) == sorted(conv_vs_torch.PASSES)
  assert all(t > 0 for t in times.values())
