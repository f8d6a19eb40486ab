"""The quality protocol's rows from runs scored by tools/quality_protocol.sh.

  python tools/protocol_table.py "NAME=WORKDIR[:TAG]" ...

For each run, reads WORKDIR/score_<split><TAG>.json of the splits heldout
(the run's own evaluation photos at full resolution), bsds_test and
imagenet_test, and prints one Markdown row: PSNR minus gray (dB) and
colorfulness as a share of the truth's on each split, with the training
steps and wall time read from the run's metrics.jsonl. A split not scored
shows "-".
"""

import json
import pathlib
import sys

SPLITS = ("heldout", "bsds_test", "imagenet_test")


def row(name: str, spec: str) -> str:
  workdir, _, tag = spec.partition(":")
  workdir = pathlib.Path(workdir)
  cells = [name]
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text()
           .splitlines() if x.strip()]
  steps = max((x["step"] for x in lines), default=0)
  cells.append(str(steps))
  for split in SPLITS:
    path = workdir / f"score_{split}{tag}.json"
    if not path.exists():
      cells.append("-")
      continue
    score = json.loads(path.read_text())
    cells.append(f"{score['psnr_minus_gray']:+.2f} dB, "
                 f"{100 * score['colorfulness_share']:.0f} %")
  return "| " + " | ".join(cells) + " |"


def main() -> None:
  if len(sys.argv) < 2:
    sys.exit(__doc__)
  print("| run | steps | " + " | ".join(
      f"{s} (PSNR - gray, colorfulness)" for s in SPLITS) + " |")
  print("|---" * (2 + len(SPLITS)) + "|")
  for arg in sys.argv[1:]:
    name, _, spec = arg.partition("=")
    print(row(name, spec))


if __name__ == "__main__":
  main()
