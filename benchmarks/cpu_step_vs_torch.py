r"""Our pix2pix step against the PyTorch reference's, each in its own process.

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/cpu_step_vs_torch.py \
      --image_size 128 --batch_size 16 --threads 2 --rounds 3

Each round starts two clean processes one after the other (the order
alternates between rounds): `python -m jaxcolor.benchmark` on
configs/pix2pix.py at `--image_size` and `--batch_size`, and
`benchmarks/torch_pix2pix_reference.py` with `--threads`. Each compiles or
warms up, times `--steps` steps and prints one JSON line; nothing else runs
in it, so neither step shares a process, a malloc arena or a machine second
with the other. Both inherit this process's environment (start it with the
`GLIBC_TUNABLES` the launchers set: both steps allocate through glibc).

Reported: each side's median step time over the rounds (each round's value
the median of its steps), the cores each kept busy (process CPU time over
wall time), the achieved rate against `--peak_gflops` on the model's FLOP count (XLA's
count of our step with direct convolutions, `model_flops_per_step`: the two
steps compute the same layers, ours with fewer products where it takes
Winograd's forms), and
`jax_over_torch`, our time over the reference's (parity: 1; the issue's
target 0.8). `--ceiling` also times a large float32 matrix product in
each framework (each in its own process): the best rate these cores
attain, against which `*_share_of_matmul` reads each step's rate.
The last line printed is one JSON object. `--inference`
compares the generator's test-time forward pass instead (ours as
`jaxcolor.colorize` runs it, L* of a uint8 batch in and a*b* on the host
out; the reference's in `.eval()` under `torch.inference_mode()`), a batch
of `--batch_size`: the `step` fields are then one batch's.

`--one_process` adds the earlier method for comparison: both steps in one
process, alternating, each timed step after `--lead_in` untimed ones of its
own. The two methods once disagreed: docs/benchmarks.md gives the
measurements and the cause. Per-thread CPU time of that process's threads during each timed step
shows who else ran (`busy_other_threads_s`).

Not part of the package and not imported by the tests; needs torch (see
torch_pix2pix_reference.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def our_command(args) -> list[str]:
  levels = args.image_size.bit_length() - 1  # 1 x 1 bottleneck.
  return [sys.executable, "-m", "jaxcolor.benchmark",
          "--config", str(ROOT / "configs" / "pix2pix.py"),
          f"--config.image_size={args.image_size}",
          f"--config.batch_size={args.batch_size}",
          f"--config.generator.num_downsamplings={levels}",
          f"--steps={args.steps}", f"--warmup={args.warmup}",
          f"--config.conv_impl={args.conv_impl}",
          *(["--inference", f"--colorize_batch={args.batch_size}"]
            if args.inference else [])]


def torch_command(args) -> list[str]:
  return [sys.executable, str(ROOT / "benchmarks" / "torch_pix2pix_reference.py"),
          f"--image_size={args.image_size}", f"--batch_size={args.batch_size}",
          f"--threads={args.threads}", f"--steps={args.steps}",
          f"--warmup={args.warmup}", *(["--inference"] if args.inference else [])]


def _timing(name: str, out: dict) -> tuple[float, float, float | None]:
  """(wall s, CPU s, FLOPs) of one process's step or inference batch."""
  if name == "jax" and "network_batch_s" in out:
    return (out["network_batch_s"], out["network_cpu_time_s"],
            out.get("network_model_flops_per_batch"))
  return (out["step_time_s"], out["step_cpu_time_s"],
          out.get("model_flops_per_step"))


def last_json(command: list[str]) -> dict:
  """Runs `command` in a fresh process; its last stdout line, parsed."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run(command, capture_output=True, text=True, env=env,
                        cwd=ROOT, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    raise SystemExit(f"error: {' '.join(command)} exited with "
                     f"{done.returncode}:\n{done.stderr[-2000:]}")
  return json.loads(lines[-1])


def two_processes(args) -> dict:
  sides = {"jax": our_command(args), "torch": torch_command(args)}
  rounds = []
  for i in range(args.rounds):
    order = list(sides) if i % 2 == 0 else list(sides)[::-1]
    result = {}
    for name in order:
      result[name] = _timing(name, last_json(sides[name]))
    rounds.append(result)
    print(f"round {i}: " + " ".join(
        f"{name} {w:.3f} s (x{c / w:.2f} cores)"
        for name, (w, c, _) in result.items()), file=sys.stderr, flush=True)
  flops = next(r["jax"][2] for r in rounds)
  out = {}
  for name in sides:
    step = statistics.median(r[name][0] for r in rounds)
    out[f"{name}_step_time_s"] = step
    out[f"{name}_step_times_s"] = [round(r[name][0], 4) for r in rounds]
    out[f"{name}_cores_busy"] = statistics.median(
        r[name][1] / r[name][0] for r in rounds)
    out[f"{name}_gflops_per_s"] = flops / step / 1e9
    out[f"{name}_share_of_peak"] = flops / step / 1e9 / args.peak_gflops
  out["jax_over_torch"] = out["jax_step_time_s"] / out["torch_step_time_s"]
  out["gflop_per_step"] = flops / 1e9
  if args.inference:
    for name in sides:
      out[f"{name}_images_per_s"] = args.batch_size / out[f"{name}_step_time_s"]
  return out


# -- the earlier method: both in one process ----------------------------------


def thread_cpu_seconds() -> dict[int, float]:
  """CPU seconds (user + system) of each thread of this process, by id."""
  ticks = os.sysconf("SC_CLK_TCK")
  out = {}
  for tid in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # The thread ended meanwhile.
      continue
    out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
  return out


def one_process(args) -> dict:
  """Both steps in this process, alternating (the method this replaced)."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import jax  # noqa: PLC0415
  import torch  # noqa: PLC0415
  import torch_pix2pix_reference as reference  # noqa: PLC0415
  from jaxcolor.benchmarking import step_timing  # noqa: PLC0415
  from jaxcolor.training import experiment
  from jaxcolor.core import parallel
  from jaxcolor.training import train_step
  import importlib.util  # noqa: PLC0415

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  spec = importlib.util.spec_from_file_location(
      "pix2pix_config", ROOT / "configs" / "pix2pix.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.image_size = args.image_size
  config.batch_size = args.batch_size
  config.generator.num_downsamplings = args.image_size.bit_length() - 1
  built = experiment.build(config, data="none", devices=jax.devices()[:1])
  step, sharding = train_step.jit_train_step(built.system, built.mesh,
                                             built.abstract_state)
  box = {"state": experiment.initial_state(built.system, sharding,
                                        built.init_rng)}
  batch = parallel.global_batch(step_timing.synthetic_batch(config), built.mesh)

  def jax_run():
    box["state"], _ = step(box["state"], batch, built.step_rng)
    jax.block_until_ready(box["state"])

  model = reference.Pix2PixStep(args.image_size.bit_length() - 1)
  lightness = torch.rand(args.batch_size, 1, args.image_size,
                         args.image_size) * 2 - 1
  ab = (torch.rand(args.batch_size, 2, args.image_size,
                   args.image_size) * 2 - 1) * 0.5
  runs = {"jax": jax_run, "torch": lambda: model(lightness, ab)}

  def timed(run):
    for _ in range(args.lead_in):
      run()
    threads = thread_cpu_seconds()
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = thread_cpu_seconds()
    # The six busiest threads' CPU seconds during the step: with two cores,
    # more than two of them busy means two pools took turns on the cores.
    busy = sorted((after[t] - threads.get(t, 0.0) for t in after),
                  reverse=True)
    return wall, cpu, [round(s, 3) for s in busy[:6]]

  for _ in range(args.warmup):
    for run in runs.values():
      run()
  rounds = []
  for i in range(args.rounds):
    order = list(runs) if i % 2 == 0 else list(runs)[::-1]
    rounds.append({name: timed(runs[name]) for name in order})
    print("one process: " + " ".join(
        f"{name} {w:.3f} s (x{c / w:.2f}; busiest threads {b})"
        for name, (w, c, b) in rounds[-1].items()), file=sys.stderr, flush=True)
  # The torch step alone in this process once JAX's pool has gone quiet.
  time.sleep(2.0)
  quiet = [timed(runs["torch"]) for _ in range(2)]
  out = {}
  for name in runs:
    out[f"{name}_step_time_s"] = statistics.median(r[name][0] for r in rounds)
    out[f"{name}_cores_busy"] = statistics.median(r[name][1] / r[name][0]
                                                  for r in rounds)
  out["torch_after_pause_s"] = statistics.median(w for w, _, _ in quiet)
  out["jax_over_torch"] = out["jax_step_time_s"] / out["torch_step_time_s"]
  out["busiest_threads_s"] = {name: rounds[-1][name][2] for name in runs}
  return out


# -- the cores' attainable rate ------------------------------------------------


def matmul_rate(framework: str, threads: int, size: int = 4096,
                repeats: int = 5) -> float:
  """Best GFLOP/s of a float32 [size, size] x [size, size] product in
  `framework` ('jax' or 'torch'): what these cores attain in practice, the
  yardstick for a step's rate beside the nominal `--peak_gflops`."""
  flops = 2.0 * size ** 3
  if framework == "torch":
    import torch  # noqa: PLC0415
    torch.set_num_threads(threads)
    a, b = torch.rand(size, size), torch.rand(size, size)
    run = lambda: torch.mm(a, b)  # noqa: E731
  else:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    a = jnp.ones((size, size), jnp.float32)
    product = jax.jit(lambda x, y: x @ y)
    run = lambda: product(a, a).block_until_ready()  # noqa: E731
  run()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  return flops / best / 1e9


def ceiling(args) -> dict:
  """Each framework's matmul rate, each in a clean process."""
  out = {}
  for name in ("jax", "torch"):
    child = last_json([sys.executable, __file__, f"--_child_matmul={name}",
                       f"--threads={args.threads}"])
    out[f"{name}_matmul_gflops_per_s"] = child["gflops_per_s"]
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--threads", type=int,
                      default=len(os.sched_getaffinity(0)),
                      help="torch's threads (XLA's CPU client uses one per "
                           "core of the affinity mask: restrict both with "
                           "taskset)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--conv_impl", default="auto",
                      choices=("auto", "xla", "cpu"),
                      help="our convolutions' forms (jaxcolor/backends)")
  parser.add_argument("--steps", type=int, default=5,
                      help="timed steps per process")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--peak_gflops", type=float, default=384.0,
                      help="fp32 peak GFLOP/s of the cores used "
                           "(docs/benchmarks.md gives the default's source)")
  parser.add_argument("--one_process", action="store_true",
                      help="also time the earlier one-process method")
  parser.add_argument("--lead_in", type=int, default=1)
  parser.add_argument("--inference", action="store_true",
                      help="compare the generator's test-time forward pass "
                           "(a batch of --batch_size) instead of the step")
  parser.add_argument("--ceiling", action="store_true",
                      help="also time a 4096^3 float32 matrix product in each "
                           "framework: the rate these cores attain")
  parser.add_argument("--_child_one_process", action="store_true",
                      help=argparse.SUPPRESS)
  parser.add_argument("--_child_matmul", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child_matmul:  # noqa: SLF001
    print(json.dumps({"gflops_per_s": matmul_rate(
        args._child_matmul, args.threads)}), flush=True)  # noqa: SLF001
    return
  if args.inference and args.one_process:
    parser.error("--one_process times training steps only")
  if args._child_one_process:  # noqa: SLF001
    print(json.dumps(one_process(args)), flush=True)
    return
  load_before = os.getloadavg()[0]
  result = {"image_size": args.image_size, "batch_size": args.batch_size,
            "mode": "inference" if args.inference else "train_step",
            "threads": args.threads,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "two_processes": two_processes(args)}
  if args.one_process:
    result["one_process"] = last_json(
        [sys.executable, __file__, "--_child_one_process",
         *[a for a in sys.argv[1:] if a != "--one_process"]])
  if args.ceiling:
    result["ceiling"] = ceiling(args)
    two = result["two_processes"]
    for name in ("jax", "torch"):
      two[f"{name}_share_of_matmul"] = (
          two[f"{name}_gflops_per_s"]
          / max(result["ceiling"].values()))
  result["load_average_before"] = round(load_before, 2)
  result["load_average_after"] = round(os.getloadavg()[0], 2)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
