"""Writes tools/splits/imagenet_test.txt, the quality protocol's second test split.

`photos256/imagenet_b` is the ImageNet DET-200 sample: five photos per
synset (one synset has four), the synset id first in each file name
(`n01443537_2625_goldfish.jpg`). The split holds out 40 whole synsets of
five photos, 200 photos, so no category of the test split is seen in
training (a photo of the same goldfish tank in training and test would
flatter the score). The 40 are the five-photo synsets with the smallest
SHA-256 of their id: fixed, documented, and chosen without looking at a
single photo or score.

  python tools/make_imagenet_test.py          # rewrites the shipped list
  python tools/make_imagenet_test.py --check  # fails if the list differs

docs/results.md ("The protocol") says how the list is used; never train or
tune on it.
"""

import argparse
import collections
import hashlib
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "photos256" / "imagenet_b"
LIST = REPO / "tools" / "splits" / "imagenet_test.txt"
NUM_SYNSETS = 40
PHOTOS_PER_SYNSET = 5


def choose(names):
  """The held-out file names: NUM_SYNSETS whole five-photo synsets, sorted."""
  by_synset = collections.defaultdict(list)
  for name in names:
    by_synset[name.split("_", 1)[0]].append(name)
  full = [s for s, files in by_synset.items() if len(files) == PHOTOS_PER_SYNSET]
  full.sort(key=lambda s: hashlib.sha256(s.encode()).hexdigest())
  return sorted(n for s in full[:NUM_SYNSETS] for n in by_synset[s])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", type=pathlib.Path, default=DEFAULT_SOURCE)
  parser.add_argument("--check", action="store_true")
  args = parser.parse_args()
  names = sorted(p.name for p in args.source.iterdir() if p.is_file())
  text = "".join(f"{n}\n" for n in choose(names))
  if args.check:
    if LIST.read_text() != text:
      sys.exit(f"{LIST} differs from the choice made from {args.source}")
    print(f"{LIST}: matches ({text.count(chr(10))} photos)")
    return
  LIST.write_text(text)
  print(f"wrote {LIST}: {text.count(chr(10))} photos")


if __name__ == "__main__":
  main()
