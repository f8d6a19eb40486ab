r"""Our pix2pix step against the PyTorch reference's, alternating, one process.

  python benchmarks/cpu_step_vs_torch.py --image_size 128 --batch_size 16 \
      --threads 2 --rounds 10

On a shared machine the load changes from one second to the next, and a step
that loses a core to another process takes twice as long. So the two steps
run alternately, one of each per round, in this process, after both are
compiled and warmed up: every round sees (nearly) the same machine. Each step
records its wall time and the CPU time of the process; their ratio (the
parallelism) shows whether it had all `--threads` cores. Reported: medians
over all rounds and over the rounds in which BOTH steps had at least
`--min_parallelism` of the cores, and the ratio torch / ours (above 1: ours
is faster). The last line printed is one JSON object.

Each timed step follows `--lead_in` untimed steps of the same implementation:
a step that directly follows the other implementation's is slowed by its
threads, which keep spinning for a while after their work (PyTorch's OpenMP
team and XLA's thread pool both do). Measured here with no lead-in: our step
took 1.6-1.8 s after one of ours and 2.2-2.7 s after one of PyTorch's, and
PyTorch's 1.3-1.7 s after its own and 1.4-2.4 s after ours. In training, a
step follows a step of its own.

Both use the same threads: XLA's CPU client one per core of the affinity mask
(restrict it with `taskset`), torch `--threads`. Not part of the package; needs
torch (see torch_pix2pix_reference.py).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Both steps allocate through the same malloc: start this script with
# GLIBC_TUNABLES=glibc.malloc.hugetlb=1 to time them with huge pages, as the
# launchers run training (jaxcolor/host_memory.py).

import jax  # noqa: E402
import ml_collections  # noqa: E402
import torch  # noqa: E402

import torch_pix2pix_reference as reference  # noqa: E402
from jaxcolor import benchmark, experiment, parallel, train_step  # noqa: E402


def pix2pix_config(image_size: int, batch_size: int) -> ml_collections.ConfigDict:
  """configs/pix2pix.py at another size: the reference's networks there."""
  import importlib.util  # noqa: PLC0415
  path = Path(__file__).resolve().parents[1] / "configs" / "pix2pix.py"
  spec = importlib.util.spec_from_file_location("pix2pix_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.image_size = image_size
  config.batch_size = batch_size
  config.generator.num_downsamplings = image_size.bit_length() - 1
  return config


def jax_step(config):
  """(run one step and wait) for our jitted step on one device."""
  built = experiment.build(config, data="none", devices=jax.devices()[:1])
  step, sharding = train_step.jit_train_step(built.system, built.mesh,
                                             built.abstract_state)
  box = {"state": experiment.init_state(built.system, sharding,
                                        built.init_rng)}
  batch = parallel.global_batch(benchmark.synthetic_batch(config), built.mesh)
  rng = built.step_rng

  def run():
    box["state"], _ = step(box["state"], batch, rng)
    jax.block_until_ready(box["state"])
  return run


def torch_step(image_size: int, batch_size: int):
  model = reference.Pix2PixStep(image_size.bit_length() - 1)
  lightness = torch.rand(batch_size, 1, image_size, image_size) * 2 - 1
  ab = (torch.rand(batch_size, 2, image_size, image_size) * 2 - 1) * 0.5
  return lambda: model(lightness, ab)


def timed(run, lead_in: int = 0) -> tuple[float, float]:
  for _ in range(lead_in):
    run()
  wall, cpu = time.perf_counter(), time.process_time()
  run()
  return time.perf_counter() - wall, time.process_time() - cpu


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--lead_in", type=int, default=1,
                      help="untimed steps before each timed one")
  parser.add_argument("--min_parallelism", type=float, default=0.9,
                      help="share of --threads a step must have had")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  runs = {"jax": jax_step(pix2pix_config(args.image_size, args.batch_size)),
          "torch": torch_step(args.image_size, args.batch_size)}
  for _ in range(args.warmup):
    for run in runs.values():
      run()
  load_before = os.getloadavg()[0]
  rounds = []
  for i in range(args.rounds):
    order = list(runs) if i % 2 == 0 else list(runs)[::-1]
    rounds.append({name: timed(runs[name], args.lead_in) for name in order})
    print(" ".join(f"{name} {w:.3f} s (x{c / w:.2f})"
                   for name, (w, c) in rounds[-1].items()), file=sys.stderr)

  def summary(selected):
    out = {}
    for name in runs:
      out[f"{name}_step_time_s"] = statistics.median(r[name][0] for r in selected)
      out[f"{name}_parallelism"] = statistics.median(
          r[name][1] / r[name][0] for r in selected)
    out["torch_over_jax"] = out["torch_step_time_s"] / out["jax_step_time_s"]
    out["rounds"] = len(selected)
    return out

  quiet = [r for r in rounds if all(
      c / w >= args.min_parallelism * args.threads for w, c in r.values())]
  result = {"image_size": args.image_size, "batch_size": args.batch_size,
            "threads": args.threads, "lead_in": args.lead_in,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "torch": torch.__version__,
            "jax": jax.__version__, "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
            "all_rounds": summary(rounds),
            "quiet_rounds": summary(quiet) if quiet else None}
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
