#!/usr/bin/env bash
# The quality protocol of docs/results.md: train on photos256 without its two
# test splits (bsds_test/ and the 200 imagenet_b photos listed in
# tools/splits/imagenet_test.txt), colorize both at full resolution through
# `jaxcolor.colorize`, score each with `jaxcolor.score`.
#
#   tools/quality_protocol.sh CONFIG WORKDIR [--config.key=value ...]
#
# PHOTOS (default ../shared/data/photos256 beside the checkout) is the photo
# folder; SPLITS_DIR (default WORKDIR/../photos256_splits) receives links:
# train/ (every training photo) and imagenet_test/, made once.
# heldout/ (the runs' own evaluation split, at full resolution: choices are
# made on it, never on the test splits) is scored too; SCORE_SPLITS
# (default "heldout bsds_test imagenet_test") picks the splits.
# COLORIZE_FLAGS (default empty) are extra flags for `jaxcolor.colorize`
# (e.g. "--upsample=guided --checkpoint 1800"); SCORE_TAG (default empty)
# names their outputs apart. A run whose generator predicts a*b* bins gets its
# decoding temperature chosen on its own held-out split first
# (`jaxcolor.temperature`). Prints the scorer's tables and the training wall
# time; leaves WORKDIR (the run), WORKDIR/<split>SCORE_TAG/ (the colorized
# photos), WORKDIR/score_<split>SCORE_TAG.{json,csv}. Rerunning resumes the
# run and rescores; SKIP_TRAIN=1 only rescores.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
config=$1; workdir=$2; shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
photos=${PHOTOS:-$here/../shared/data/photos256}
splits=${SPLITS_DIR:-$(dirname "$workdir")/photos256_splits}
held_out=$here/tools/splits/imagenet_test.txt
tag=${SCORE_TAG:-}
if [ ! -d "$photos/bsds_test" ] || [ ! -d "$photos/imagenet_b" ]; then
  echo "error: $photos/bsds_test or imagenet_b not found (set PHOTOS to the photos256 folder)" >&2
  exit 2
fi
if [ ! -d "$splits" ]; then
  # Links to files, not folders: the folder reader does not follow linked folders.
  mkdir -p "$splits.partial/imagenet_test"
  for sub in "$photos"/*/; do
    name=$(basename "$sub")
    [ "$name" = bsds_test ] && continue
    mkdir -p "$splits.partial/train/$name"
    for f in "$sub"*; do
      [ -f "$f" ] || continue
      if [ "$name" = imagenet_b ] && grep -qxF "$(basename "$f")" "$held_out"; then
        ln -s "$f" "$splits.partial/imagenet_test/"
      else
        ln -s "$f" "$splits.partial/train/$name/"
      fi
    done
  done
  count=$(find "$splits.partial/imagenet_test" -type l | wc -l)
  if [ "$count" -ne "$(wc -l < "$held_out")" ]; then
    echo "error: $count of the $(wc -l < "$held_out") photos of $held_out found in $photos/imagenet_b" >&2
    exit 2
  fi
  mv "$splits.partial" "$splits"
fi
if [ ! -d "$splits/heldout" ]; then
  # The runs' own evaluation split (the folder reader's hash split of the
  # training folder), at full resolution: what choices are made on.
  python - "$splits" <<'PY'
import os, pathlib, sys
from jaxcolor.data import sources
splits = pathlib.Path(sys.argv[1])
partial = splits / "heldout.partial"
partial.mkdir(exist_ok=True)
for relative in sources.list_images(splits / "train"):
  if sources.is_held_out(relative):
    target = partial / relative.replace("/", "__")
    if not target.exists():
      os.symlink(os.path.realpath(splits / "train" / relative), target)
partial.rename(splits / "heldout")
PY
fi
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  start=$(date +%s)
  python -m jaxcolor.main --config "$config" --workdir "$workdir" \
    --config.dataset="folder:$splits/train" "$@"
  echo "training wall time: $(( $(date +%s) - start )) s"
fi
if grep -q '"ab_bins": true' "$workdir/config.json" && [ ! -f "$workdir/temperature.json" ]; then
  # A bins generator: its decoding temperature, chosen on its held-out split.
  python -m jaxcolor.temperature --workdir "$workdir"
fi
for split in ${SCORE_SPLITS:-heldout bsds_test imagenet_test}; do
  if [ "$split" = bsds_test ]; then truth=$photos/bsds_test; else truth=$splits/$split; fi
  out=$workdir/$split$tag
  rm -rf "$out"
  # shellcheck disable=SC2086
  python -m jaxcolor.colorize --workdir "$workdir" --output "$out" ${COLORIZE_FLAGS:-} "$truth"
  echo "== $split$tag"
  python -m jaxcolor.score --truth "$truth" --predictions "$out" \
    --output "$workdir/score_$split$tag.json" --csv "$workdir/score_$split$tag.csv"
done
