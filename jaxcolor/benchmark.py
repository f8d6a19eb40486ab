r"""`python -m jaxcolor.benchmark --config FILE[:preset]`: time the real
training step, the input pipeline or inference on this machine, or compile
every program for a TPU slice that is not here (also `jaxcolor benchmark`).

  python -m jaxcolor.benchmark --config configs/pix2pix.py \
      --config.compute_dtype=bfloat16 --input_pipeline
  python -m jaxcolor.benchmark --config configs/cpu_budget.py --colorize=PHOTOS
  python -m jaxcolor.benchmark --config configs/pix2pix.py --topology v5e:4x4 \
      --per_chip_batch 16 --config.compute_dtype=bfloat16 [--max_batch]

What each number means: jaxcolor/benchmarking/step_timing.py (the step),
colorize_timing.py (inference) and compile_only.py (a TPU slice), which do
the work. The last line printed is one JSON object (compile-only: one per
program).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from jaxcolor.benchmarking import compile_only  # noqa: E402
from jaxcolor.benchmarking import step_timing  # noqa: E402
from jaxcolor.runtime import config_file  # noqa: E402
from jaxcolor.runtime import job  # noqa: E402


def main(argv) -> None:
  job.takes_no_arguments(argv)
  F = flags.FLAGS
  if F.inference and F.colorize is not None:
    raise app.UsageError("--inference times the network alone and --colorize "
                         "the network and the path: give one.")
  if F.topology:
    compile_only.job(job.config(), F.topology, per_chip_batch=F.per_chip_batch,
                     programs=tuple(F.programs),
                     last_phase_only=F.last_phase_only, hlo_dir=F.dump_hlo,
                     max_batch=F.max_batch,
                     max_batch_compiles=F.max_batch_compiles)
  else:
    step_timing.job(job.config(), steps=F.steps, warmup=F.warmup,
                    input_pipeline=F.input_pipeline,
                    input_batches=F.input_batches, skip_step=F.skip_step,
                    colorize_folder=F.colorize, colorize_batch=F.colorize_batch,
                    inference=F.inference)


def _define_flags() -> None:
  config_file.define_flag()
  flags.DEFINE_integer(
      "steps", 20, "Timed steps (the median is reported); 0: compile only.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.")
  flags.DEFINE_bool(
      "input_pipeline", False, "Also time the host input pipeline on config.dataset.")
  flags.DEFINE_integer(
      "input_batches", 20, "Batches read when timing the input pipeline.")
  flags.DEFINE_string(
      "colorize", None, "A folder of photos: time inference (the network, and "
      "the colorize path stage by stage and end to end) instead of training.")
  flags.DEFINE_integer(
      "colorize_batch", 16, "Batch of the network in --colorize.")
  flags.DEFINE_bool(
      "inference", False, "Time the colorize network alone (no folder needed) "
      "instead of training.")
  flags.DEFINE_string(
      "topology", None, "Compile only, for a TPU slice that need not be here "
      "(e.g. v5e:4x4, v5p:4x4x4; needs libtpu: the tpu extra): one JSON line "
      "per program with its memory, cost, collectives and roofline bound "
      "(jaxcolor/benchmarking/compile_only.py).")
  flags.DEFINE_integer(
      "per_chip_batch", None, "With --topology: images per chip in a training "
      "step (default: the config's per_device_batch_size, else batch_size over "
      "the chips).")
  flags.DEFINE_list(
      "programs", list(compile_only.PROGRAMS), "With --topology: which programs "
      f"to compile, of {', '.join(compile_only.PROGRAMS)}.")
  flags.DEFINE_bool(
      "last_phase_only", False, "With --topology: compile only the last "
      "training phase (a staged system's full step), not every phase.")
  flags.DEFINE_string(
      "dump_hlo", None, "With --topology: write each compiled program's "
      "optimized HLO text to this folder.")
  flags.DEFINE_integer(
      "max_batch_compiles", None, "With --max_batch: stop after this many "
      "compiles, with the largest batch that fit and the smallest that did not "
      "(default: until they are adjacent).")
  flags.DEFINE_bool(
      "max_batch", False, "With --topology: also find the largest per-chip "
      "batch whose training step fits the chip's memory.")
  flags.DEFINE_bool(
      "skip_step", False, "Time only the input pipeline (with --input_pipeline).")


if __name__ == "__main__":
  job.run("benchmark", sys.modules[__name__])
