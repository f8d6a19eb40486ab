r"""Every convolution of the pix2pix step, ours against PyTorch's, pass by pass.

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/conv_vs_torch.py \
      --image_size 128 --batch_size 16 --threads 2

The layers of configs/pix2pix.py at `--image_size` with a 1 x 1 bottleneck
(the U-Net generator, ngf 64, and the 3-layer PatchGAN, ndf 64, as
`benchmarks/cpu_step_vs_torch.py` compares their steps), each timed alone
in its three passes: the forward pass, the input gradient and the weight
gradient. Ours in the forms the CPU step runs (`CpuConvForms`'
`conv_stride2`, `conv_transpose_stride2` and, for the PatchGAN's stride-1
layers, `conv_stride1`: Winograd's forms where their thresholds pick
them), one jitted function per pass;
compiled as the step is (`backends.compiler_options`: by default XLA's own
convolution kernels; `--cpu_conv_library=ynnpack` YNNPACK's);
PyTorch's `F.conv2d` / `F.conv_transpose2d` and `torch.autograd.grad` for
one input at a time (its `convolution_backward` computes only what is
asked), NCHW as the reference. Each framework runs in its own clean
process with `--threads` threads, like the step comparison.

Each pass is counted as often as one training step runs it (`PASSES`: the
discriminator sees the fake and the real batch in its update and the fake
again in the generator's; inputs that are data get no input gradient), so
the totals are the step's convolution time in each framework, with each
pass isolated: the step itself overlaps independent passes and adds the
work between them (docs/benchmarks.md reads the two together). Rates are
GFLOP/s on the forward pass's FLOPs, the same count for all three passes.

The last line printed is one JSON object (per layer and pass, both
frameworks' median ms). Not part of the package and not imported by the
tests; needs torch (see torch_pix2pix_reference.py).
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Layer(NamedTuple):
  name: str
  kind: str        # 'down' (stride 2), 'up' (transposed, stride 2), 'same'
  inputs: int      # (stride 1, padding 1: the output 1 smaller)
  outputs: int
  size: int        # the input's height and width
  forward: int     # how many times one training step runs each pass
  input_grad: int
  weight_grad: int

  def output_size(self) -> int:
    return {"down": self.size // 2, "up": self.size * 2,
            "same": self.size - 1}[self.kind]

  def flops(self, batch: int) -> float:
    """Multiply-adds of the forward pass, x 2 (no work on padding counted
    for the transposed layer: each input pixel meets 16 taps)."""
    if self.kind == "up":
      return 2.0 * batch * self.size ** 2 * 16 * self.inputs * self.outputs
    return 2.0 * batch * self.output_size() ** 2 * 16 * self.inputs * self.outputs


def step_layers(image_size: int, ngf: int = 64, ndf: int = 64) -> list[Layer]:
  """The convolutions of one pix2pix training step with a 1 x 1 bottleneck.

  The generator: each layer once per pass, except down_0's input gradient
  (its input is the photo's L*). The discriminator: forward on the fake and
  the real batch (its update) and on the fake again (the generator's); its
  weights' gradients in its update only; input gradients wherever a
  gradient flows on, i.e. not into the data of its update (conv_0: only the
  generator's pass, into the fake a*b*).
  """
  levels = image_size.bit_length() - 1
  width = lambda i: ngf * min(2 ** i, 8)  # noqa: E731
  out = []
  for i in range(levels):
    out.append(Layer(f"G down_{i}", "down", 1 if i == 0 else width(i - 1),
                     width(i), image_size >> i, 1, 0 if i == 0 else 1, 1))
  for i in reversed(range(levels)):
    inputs = width(levels - 1) if i == levels - 1 else 2 * width(i)
    out.append(Layer(f"G up_{i}", "up", inputs, 2 if i == 0 else width(i - 1),
                     image_size >> (i + 1), 1, 1, 1))
  dwidth = lambda i: ndf * min(2 ** i, 8)  # noqa: E731
  out.append(Layer("D conv_0", "down", 3, ndf, image_size, 3, 1, 2))
  out.append(Layer("D conv_1", "down", ndf, dwidth(1), image_size // 2, 3, 3, 2))
  out.append(Layer("D conv_2", "down", dwidth(1), dwidth(2), image_size // 4,
                   3, 3, 2))
  out.append(Layer("D conv_3", "same", dwidth(2), dwidth(3), image_size // 8,
                   3, 3, 2))
  out.append(Layer("D logits", "same", dwidth(3), 1, image_size // 8 - 1,
                   3, 3, 2))
  return out


PASSES = ("forward", "input_grad", "weight_grad")


def _median_ms(run, repeats: int, warmup: int = 2) -> float:
  for _ in range(warmup):
    run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def time_ours(layer: Layer, batch: int, repeats: int,
              library: str = "eigen") -> dict[str, float]:
  import jax  # noqa: PLC0415
  import ml_collections  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from jaxcolor import backends  # noqa: PLC0415
  from jaxcolor.backends import xla_cpu  # noqa: PLC0415
  options = backends.compiler_options(
      ml_collections.ConfigDict({"cpu_conv_library": library}), "cpu")
  cpu = xla_cpu.CpuConvForms()
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, layer.size, layer.size, layer.inputs),
                          np.float32)
  w = 0.02 * rng.standard_normal((4, 4, layer.inputs, layer.outputs),
                                 np.float32)
  size = layer.output_size()
  g = rng.standard_normal((batch, size, size, layer.outputs), np.float32)
  if layer.kind == "down":
    conv = lambda x, w: cpu.conv_stride2(x, w, 1)  # noqa: E731
  elif layer.kind == "up":
    conv = lambda x, w: cpu.conv_transpose_stride2(x, w, 1, 0)  # noqa: E731
  else:  # The PatchGAN's layer itself: Winograd's form where it takes it.
    conv = lambda x, w: cpu.conv_stride1(x, w, 1)  # noqa: E731
  jit = lambda f: jax.jit(f, compiler_options=options)  # noqa: E731
  programs = {
      "forward": (jit(conv), (x, w)),
      "input_grad": (jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0]),
                     (x, w, g)),
      "weight_grad": (jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1]),
                      (x, w, g)),
  }
  out = {}
  for name, (fn, args) in programs.items():
    args = jax.device_put(args)
    out[name] = _median_ms(lambda: jax.block_until_ready(fn(*args)), repeats)
  return out


def time_torch(layer: Layer, batch: int, repeats: int) -> dict[str, float]:
  import torch  # noqa: PLC0415
  import torch.nn.functional as F  # noqa: PLC0415,N812
  gen = torch.Generator().manual_seed(0)
  x = torch.randn(batch, layer.inputs, layer.size, layer.size, generator=gen)
  if layer.kind == "up":  # ConvTranspose2d's weight: [in, out, k, k].
    w = 0.02 * torch.randn(layer.inputs, layer.outputs, 4, 4, generator=gen)
    conv = lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1)  # noqa: E731
  else:
    w = 0.02 * torch.randn(layer.outputs, layer.inputs, 4, 4, generator=gen)
    stride = 2 if layer.kind == "down" else 1
    conv = lambda x, w: F.conv2d(x, w, stride=stride, padding=1)  # noqa: E731
  size = layer.output_size()
  g = torch.randn(batch, layer.outputs, size, size, generator=gen)
  out = {}
  with torch.inference_mode():
    out["forward"] = _median_ms(lambda: conv(x, w), repeats)
  for name, wrt in (("input_grad", x), ("weight_grad", w)):
    wrt.requires_grad_(True)
    y = conv(x, w)
    out[name] = _median_ms(
        lambda y=y, wrt=wrt: torch.autograd.grad(y, (wrt,), g,
                                                 retain_graph=True), repeats)
    wrt.requires_grad_(False)
  return out


def child(args) -> None:
  if args._child == "torch":
    import torch  # noqa: PLC0415
    torch.set_num_threads(args.threads)
    timer = time_torch
  else:
    timer = functools.partial(time_ours, library=args.cpu_conv_library)
  result = {}
  for layer in step_layers(args.image_size):
    result[layer.name] = timer(layer, args.batch_size, args.repeats)
    print(f"{args._child}: {layer.name} done", file=sys.stderr, flush=True)
  print(json.dumps(result))


def run_child(framework: str, args) -> dict:
  command = [sys.executable, __file__, f"--_child={framework}",
             f"--image_size={args.image_size}",
             f"--batch_size={args.batch_size}", f"--threads={args.threads}",
             f"--repeats={args.repeats}",
             f"--cpu_conv_library={args.cpu_conv_library}"]
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                        env=os.environ, check=False)
  if proc.returncode:
    raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n"
                     f"{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def report(args, ours: dict, theirs: dict) -> dict:
  """The table (stdout) and its JSON summary."""
  print(f"{'layer':10s} {'I->O at HxW':>18s} {'GFLOP':>6s} | "
        + " | ".join(f"{p:>22s}" for p in PASSES) + " | step ms (ours/torch)")
  totals = {"ours": 0.0, "torch": 0.0}
  by_pass = {p: {"ours": 0.0, "torch": 0.0} for p in PASSES}
  rows = {}
  for layer in step_layers(args.image_size):
    gflop = layer.flops(args.batch_size) / 1e9
    cells, step = [], {"ours": 0.0, "torch": 0.0}
    for p in PASSES:
      a, b = ours[layer.name][p], theirs[layer.name][p]
      count = getattr(layer, p)
      for side, value in (("ours", a), ("torch", b)):
        step[side] += count * value
        by_pass[p][side] += count * value
      cells.append(f"{a:6.1f} {b:6.1f} ({b / a:4.2f}) x{count}")
    for side in totals:
      totals[side] += step[side]
    rows[layer.name] = {"gflop": gflop, "ours_ms": ours[layer.name],
                        "torch_ms": theirs[layer.name],
                        "step_ms": step}
    shape = f"{layer.inputs}->{layer.outputs} at {layer.size}"
    print(f"{layer.name:10s} {shape:>18s} {gflop:6.2f} | " + " | ".join(cells)
          + f" | {step['ours']:6.1f} / {step['torch']:6.1f}")
  print("cells: ours ms, torch ms (torch/ours: below 1, PyTorch faster), "
        "times per step")
  for p in PASSES:
    print(f"{p:12s} per step: ours {by_pass[p]['ours']:7.1f} ms, "
          f"torch {by_pass[p]['torch']:7.1f} ms")
  print(f"all convolutions of one step: ours {totals['ours']:.1f} ms, "
        f"torch {totals['torch']:.1f} ms ({totals['ours'] / totals['torch']:.3f} x)")
  return {"image_size": args.image_size, "batch_size": args.batch_size,
          "threads": args.threads, "cpu_conv_library": args.cpu_conv_library, "layers": rows, "by_pass": by_pass,
          "step_conv_ms": totals,
          "ours_over_torch": totals["ours"] / totals["torch"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--cpu_conv_library", default="eigen",
                      choices=("eigen", "ynnpack"),
                      help="ours: the library XLA:CPU convolves with "
                           "(config.cpu_conv_library)")
  parser.add_argument("--_child", choices=("jax", "torch"), default=None,
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.image_size < 32 or args.image_size & (args.image_size - 1):
    parser.error(f"--image_size={args.image_size}: a power of two, at least "
                 "32 (the PatchGAN's three halvings and a 4 x 4 window).")
  if args._child:
    child(args)
    return
  ours = run_child("jax", args)
  theirs = run_child("torch", args)
  print(json.dumps(report(args, ours, theirs)))


if __name__ == "__main__":
  main()
