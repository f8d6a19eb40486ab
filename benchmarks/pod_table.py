r"""The pod table of docs/benchmarks.md: every system compiled for TPU slices.

  python benchmarks/pod_table.py run  --out docs/pod_table.jsonl
  python benchmarks/pod_table.py table --out docs/pod_table.jsonl

`run` compiles the full training step (the last phase) of each config for
each topology and compute dtype, at `--per_chip_batch` images per chip, one
`python -m jaxcolor.benchmark --topology` process per row, and appends its
JSON line to `--out`; rows already there are skipped, so an interrupted
sweep resumes. `--max_batch_on` adds the largest per-chip batch that fits on
those topologies. `table` prints the markdown table from the file. Every
figure is XLA's TPU compiler's own (memory, FLOPs, bytes) or derived from
the chips' published figures (jaxcolor/benchmarking/chips.py): nothing runs on a TPU.
"""

import argparse
import datetime
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ("pix2pix", "pix2pix_improver", "resnet18_unet", "dla_cdcgan",
           "iizuka")
TOPOLOGIES = ("v4:2x2x1", "v5e:4x4", "v5e:16x16", "v5p:4x4x4")
# The names Cloud TPU sells them by (v4 and v5p count TensorCores).
SLICE_NAMES = {"v4:2x2x1": "v4-8", "v5e:4x4": "v5e-16",
               "v5e:16x16": "v5e-256", "v5p:4x4x4": "v5p-128"}


def _key(record: dict) -> tuple:
  return (record["system"], record["topology"], record["compute_dtype"],
          record.get("per_device_batch"), record.get("label", ""),
          record["program"] == "max_batch")


def _read(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()
          if line.strip()]


def run(args) -> None:
  out = pathlib.Path(args.out)
  done = {_key(r) for r in _read(out)}
  for config in args.configs:
    for topology in args.topologies:
      for dtype in args.dtypes:
        search = topology in args.max_batch_on
        probe = {"system": config, "topology": topology,
                 "compute_dtype": dtype, "per_device_batch": args.per_chip_batch,
                 "label": args.label, "program": "train"}
        if _key(probe) in done and (not search or _key(
            {**probe, "program": "max_batch", "per_device_batch": None})
                                    in done):
          continue
        command = [
            sys.executable, "-m", "jaxcolor.benchmark",
            "--config", f"configs/{config}.py", "--topology", topology,
            "--programs", "train", "--last_phase_only",
            "--per_chip_batch", str(args.per_chip_batch),
            f"--config.compute_dtype={dtype}", *args.override]
        if args.dump_hlo:
          command += ["--dump_hlo", f"{args.dump_hlo}/{topology}_{dtype}"]
        if search:
          command += ["--max_batch", "--max_batch_compiles",
                      str(args.max_batch_compiles)]
        print(" ".join(command[1:]), flush=True)
        result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE,
                                text=True, check=False)
        if result.returncode:
          continue  # Its error went to stderr; the row stays to do.
        date = datetime.date.today().isoformat()
        with out.open("a") as f:
          for line in result.stdout.splitlines():
            if line.startswith("{"):
              record = json.loads(line)
              record.update(label=args.label, date=date,
                            command=" ".join(["python", *command[1:]]))
              if record["program"] == "max_batch":
                record["per_device_batch"] = None
                record.pop("report", None)
              f.write(json.dumps(record) + "\n")


def _largest(record: dict) -> str:
  """'57' when 58 did not fit; when the search stopped first, '57 to 63'
  (64 did not fit) or '>= 57' (nothing larger was refused)."""
  low, high = record["largest_per_chip_batch"], record["smallest_not_fitting"]
  if high == low + 1:
    return str(low)
  return f">= {low}" if high > 4096 else f"{low} to {high - 1}"


def _gb(value: float) -> str:
  return f"{value / 1e9:.2f}"


def _rank(names: tuple, name: str) -> int:
  return names.index(name) if name in names else len(names)


def table(args) -> None:
  records = _read(pathlib.Path(args.out))
  largest = {(r["system"], r["topology"], r["compute_dtype"], r["label"]):
             _largest(r) for r in records if r["program"] == "max_batch"}
  print("| system | slice | dtype | variant | per-chip batch | fits | "
        "GB per device (of HBM) | TFLOP / device-step | GB moved / "
        "device-step | bound by | step-time bound ms | images/s bound | "
        "MFU bound | largest per-chip batch |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  def order(r: dict) -> tuple:  # System, slice, dtype, then variants.
    return (_rank(CONFIGS, r["system"]), _rank(TOPOLOGIES, r["topology"]),
            r["compute_dtype"] != "bfloat16", r["label"], r["per_device_batch"])

  for r in sorted((r for r in records if r["program"] != "max_batch"),
                  key=order):
    found = largest.get((r["system"], r["topology"], r["compute_dtype"],
                         r["label"]))
    print(f"| {r['system']} | {SLICE_NAMES.get(r['topology'], r['topology'])}"
          f" | {r['compute_dtype']} | {r['label'] or 'as configured'} | "
          f"{r['per_device_batch']} | {'yes' if r['fits'] else 'NO'} | "
          f"{_gb(r['total_bytes'])} ({_gb(r['hbm_bytes_per_device'])}) | "
          f"{r['flops_per_device'] / 1e12:.3f} | "
          f"{_gb(r['bytes_accessed_per_device'])} | {r['bound_by']} | "
          f"{r['step_time_bound_s'] * 1e3:.1f} | "
          f"{r['images_per_s_bound']:.0f} | {r['mfu_bound']:.0%} | "
          f"{found if found is not None else '-'} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("mode", choices=("run", "table"))
  parser.add_argument("--out", default="docs/pod_table.jsonl")
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
  parser.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES))
  parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
  parser.add_argument("--per_chip_batch", type=int, default=16)
  parser.add_argument("--max_batch_on", nargs="*", default=[])
  parser.add_argument("--max_batch_compiles", type=int, default=3)
  parser.add_argument("--dump_hlo", default="",
                      help="a folder for each program's optimized HLO "
                      "(benchmarks/pod_profile.py reads them)")
  parser.add_argument("--label", default="",
                      help="names a variant row (with --override)")
  parser.add_argument("--override", nargs="*", default=[],
                      help="--config.key=value flags for every row")
  args = parser.parse_args()
  run(args) if args.mode == "run" else table(args)


if __name__ == "__main__":
  main()
