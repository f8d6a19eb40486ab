r"""Where a compiled TPU step spends its time, by XLA's own TPU cost model.

  python -m jaxcolor.benchmark --config configs/pix2pix.py --topology v5e:4x4 \
      --per_chip_batch 16 --config.compute_dtype=bfloat16 --programs train \
      --dump_hlo /tmp/hlo
  python benchmarks/pod_profile.py /tmp/hlo/pix2pix_train_train.hlo.txt

XLA's TPU compiler annotates every instruction of the optimized program with
its `estimated_cycles`. This sums them over the entry computation by what the
instruction does, named from its source (`op_name` metadata): convolutions
(with what XLA fused into them), normalization, activations, the optimizer
update, relayouts (a `copy` between two layouts of one array), the colour
conversion, collectives, and the rest; and prints each share with the
logical bytes of the results written. Nothing runs: it is the compiler's
estimate, read to see why a step is memory- or layout-bound.
"""

import argparse
import collections
import math
import re

_INSTRUCTION = re.compile(
    r"^\s*%(?P<name>[\w.-]+) = (?P<shape>.+?) (?P<op>[a-z-]+)\((?P<args>.*)$")
_ARRAY = re.compile(r"\b(pred|[a-z]+\d+)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2,
          "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8,
          "u64": 8}
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_KIND = re.compile(r"kind=(k\w+)")
_SKIPPED = {"parameter", "constant", "get-tuple-element", "bitcast", "tuple",
            "copy-done", "all-reduce-done", "all-gather-done"}


def category(op: str, kind: str | None, op_name: str) -> str:
  """What an instruction does, from its opcode, fusion kind and source."""
  path = op_name.lower()
  if op in ("all-reduce", "all-reduce-start", "all-gather-start",
            "reduce-scatter", "collective-permute-start", "all-to-all"):
    return "collectives"
  if op == "copy":
    return "relayout copies"
  if op == "copy-start":
    return "memory-space copies"
  if "conv_general_dilated" in path or op == "convolution" or (
      kind == "kOutput"):
    return "convolutions (and their fused inputs/outputs)"
  if "batchnorm" in path or "instancenorm" in path or "normalization" in path:
    return "normalization"
  if any(a in path for a in ("leaky_relu", "relu", "tanh", "sigmoid")):
    return "activations"
  if "lab" in path or "rgb" in path:
    return "colour conversion"
  if "optimizer" in path or "adam" in path or "opt_state" in path or (
      not path.startswith("jit(") and "state[" in path):
    return "optimizer update"
  if "transpose(jvp" in path or "jvp(" in path:
    return "other network ops"
  return "outside the networks (optimizer, losses, checks)"


def _bytes(shape: str) -> int:
  return sum(_BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",")
                                               if d)
             for dtype, dims in _ARRAY.findall(shape))


def profile(hlo_text: str) -> dict[str, dict[str, float]]:
  """{category: {'cycles', 'bytes', 'moved', 'count'}} over the entry
  computation: estimated cycles, bytes of the results, and bytes of the
  results and operands (what an instruction moves, as XLA's cost analysis
  counts it)."""
  totals: dict[str, dict[str, float]] = collections.defaultdict(
      lambda: {"cycles": 0.0, "bytes": 0.0, "moved": 0.0, "count": 0})
  sizes: dict[str, int] = {}
  entry = hlo_text[hlo_text.index("\nENTRY "):]
  for line in entry.splitlines()[1:]:
    if line.startswith("}"):
      break
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    written = _bytes(match.group("shape"))
    sizes[match.group("name")] = written
    if match.group("op") in _SKIPPED:
      continue
    operands = re.split(r"\b(?:calls|metadata|backend_config|kind)=",
                        match.group("args"))[0]
    read = sum(sizes.get(name, 0)
               for name in re.findall(r"%([\w.-]+)", operands))
    cycles = _CYCLES.search(line)
    kind = _KIND.search(line)
    name = _OP_NAME.search(line)
    row = totals[category(match.group("op"), kind and kind.group(1),
                          name.group(1) if name else "")]
    row["cycles"] += int(cycles.group(1)) if cycles else 0
    row["bytes"] += written
    row["moved"] += written + read
    row["count"] += 1
  return dict(totals)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("hlo", help="a --dump_hlo file")
  args = parser.parse_args()
  with open(args.hlo) as f:
    totals = profile(f.read())
  all_cycles = sum(r["cycles"] for r in totals.values()) or 1
  print("| what | instructions | share of estimated cycles | "
        "GB written | GB read and written |")
  print("|---|---|---|---|---|")
  for name, row in sorted(totals.items(), key=lambda kv: -kv[1]["cycles"]):
    print(f"| {name} | {row['count']} | {row['cycles'] / all_cycles:.1%} | "
          f"{row['bytes'] / 1e9:.3f} | {row['moved'] / 1e9:.3f} |")


if __name__ == "__main__":
  main()
