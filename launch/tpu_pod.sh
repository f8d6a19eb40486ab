#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice: creates it (or reuses it), copies this
# checkout to every host, installs it, and runs the same training command on
# all hosts at once. jax.distributed finds the other hosts by itself on TPU VMs
# (JAXCOLOR_DISTRIBUTED=1); each host reads its own block of every batch, all
# hosts write the checkpoints together, process 0 writes logs and images.
#
#   TPU_NAME=colorize ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#   WORKDIR=gs://my-bucket/runs/pix2pix DATA_DIR=gs://my-bucket/tensorflow_datasets \
#   launch/tpu_pod.sh --config configs/pix2pix.py --config.batch_size=256
#
# Arguments: passed to `python -m jaxcolor.main` (--config is required).
# Environment:
#   TPU_NAME          TPU VM name (required); created when it does not exist
#   ZONE              its zone (required)
#   WORKDIR           run directory, gs://... so every host sees it (required);
#                     the same command on the same WORKDIR resumes
#   DATA_DIR          TFDS data directory (ArrayRecord), e.g. gs://.../tensorflow_datasets
#   ACCELERATOR_TYPE  slice to create (default v4-8; v4-32 has 4 hosts)
#   RUNTIME_VERSION   TPU VM image to create (default tpu-ubuntu2204-base)
#   PROJECT           gcloud project (default: gcloud's configured one)
#   SPOT=1            create a spot slice (cheaper; preemption saves a checkpoint)
#   JAX_SPEC          pip requirement for JAX on TPU (default "jax[tpu]>=0.10.2,<0.12")
#   DETACH=1          run under nohup on every host (log: ~/jaxcolor_train.log)
#                     and return; default: stream every host's output here
#   DRY_RUN=1         print the gcloud commands instead of running them
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (gs://...)}"
if [[ " $* " != *" --config"* ]]; then
  echo "usage: launch/tpu_pod.sh --config configs/FILE.py[:preset] [--config.key=value ...]" >&2
  exit 2
fi
accelerator="${ACCELERATOR_TYPE:-v4-8}"
runtime="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
jax_spec="${JAX_SPEC:-jax[tpu]>=0.10.2,<0.12}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gcloud_args=(--zone "$ZONE")
[[ -n "${PROJECT:-}" ]] && gcloud_args+=(--project "$PROJECT")

run() {
  if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

# 1. The slice.
if [[ -z "${DRY_RUN:-}" ]] && gcloud compute tpus tpu-vm describe "$TPU_NAME" "${gcloud_args[@]}" >/dev/null 2>&1; then
  echo "tpu_pod: reusing $TPU_NAME" >&2
else
  create=(gcloud compute tpus tpu-vm create "$TPU_NAME" "${gcloud_args[@]}"
          --accelerator-type "$accelerator" --version "$runtime")
  [[ -n "${SPOT:-}" ]] && create+=(--spot)
  run "${create[@]}"
fi

# 2. The code: tracked and new (not ignored) files of this checkout.
staging="$(mktemp -d -t jaxcolor.XXXXXX)"
trap 'rm -rf "$staging"' EXIT
archive="$staging/jaxcolor.tar.gz"
if [[ -z "${DRY_RUN:-}" ]]; then
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
     | tar --null -T - -czf "$archive")
fi
ssh_all=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gcloud_args[@]}" --worker=all)
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:~/jaxcolor.tar.gz" \
  "${gcloud_args[@]}" --worker=all

# 3. Install on every host (a virtualenv of its own; repeated runs update it).
install="rm -rf ~/jaxcolor && mkdir -p ~/jaxcolor && tar -xzf ~/jaxcolor.tar.gz -C ~/jaxcolor \
&& (test -d ~/jaxcolor_venv || python3 -m venv ~/jaxcolor_venv) \
&& ~/jaxcolor_venv/bin/pip install -q -U pip \
&& ~/jaxcolor_venv/bin/pip install -q '$jax_spec' -e ~/jaxcolor"
run "${ssh_all[@]}" --command "$install"

# 4. Train: the same command on every host.
args=(--workdir "$WORKDIR")
[[ -n "${DATA_DIR:-}" ]] && args+=("--config.data_dir=$DATA_DIR")
args+=("$@")
# Huge pages for host allocations (jaxcolor/runtime/host_memory.py), set at start.
train="cd ~/jaxcolor && GLIBC_TUNABLES=glibc.malloc.hugetlb=1 JAXCOLOR_DISTRIBUTED=1 ~/jaxcolor_venv/bin/python -m jaxcolor.main $(printf '%q ' "${args[@]}")"
if [[ -n "${DETACH:-}" ]]; then
  train="nohup bash -c $(printf '%q' "$train") > ~/jaxcolor_train.log 2>&1 < /dev/null &"
fi
run "${ssh_all[@]}" --command "$train"
