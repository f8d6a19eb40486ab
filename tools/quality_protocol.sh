#!/usr/bin/env bash
# The quality protocol of docs/results.md: train on photos256 without its
# bsds_test/ folder, colorize bsds_test/ at full resolution through
# `jaxcolor.colorize`, score with `jaxcolor.score`.
#
#   tools/quality_protocol.sh CONFIG WORKDIR [--config.key=value ...]
#
# PHOTOS (default ../shared/data/photos256 beside the checkout) is the photo
# folder; TRAIN_DIR (default WORKDIR/../photos256_train) receives links to
# every training photo (all but bsds_test/), made once. Prints the scorer's
# table and the training wall time; leaves WORKDIR (the run),
# WORKDIR/bsds_test/ (the colorized photos), WORKDIR/score.json and
# WORKDIR/score.csv. Rerunning resumes the run and rescores.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
config=$1; workdir=$2; shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
photos=${PHOTOS:-$here/../shared/data/photos256}
train_dir=${TRAIN_DIR:-$(dirname "$workdir")/photos256_train}
if [ ! -d "$photos/bsds_test" ]; then
  echo "error: $photos/bsds_test not found (set PHOTOS to the photos256 folder)" >&2
  exit 2
fi
if [ ! -d "$train_dir" ]; then
  # Links to files, not folders: the folder reader does not follow linked folders.
  mkdir -p "$train_dir.partial"
  for sub in "$photos"/*/; do
    name=$(basename "$sub")
    [ "$name" = bsds_test ] && continue
    mkdir -p "$train_dir.partial/$name"
    find "$sub" -maxdepth 1 -type f -exec ln -s {} "$train_dir.partial/$name/" \;
  done
  mv "$train_dir.partial" "$train_dir"
fi
start=$(date +%s)
python -m jaxcolor.main --config "$config" --workdir "$workdir" \
  --config.dataset="folder:$train_dir" "$@"
echo "training wall time: $(( $(date +%s) - start )) s"
rm -rf "$workdir/bsds_test"
python -m jaxcolor.colorize --workdir "$workdir" --output "$workdir/bsds_test" \
  "$photos/bsds_test"
python -m jaxcolor.score --truth "$photos/bsds_test" \
  --predictions "$workdir/bsds_test" --output "$workdir/score.json" \
  --csv "$workdir/score.csv"
