#!/usr/bin/env bash
# Runs one command as N processes on this machine, the way the hosts of a pod
# run it: each process gets its id, all meet at a coordinator on 127.0.0.1,
# and jax.distributed joins their devices into one mesh (jaxcolor/runtime/distributed.py).
# On a CPU-only machine each process simulates JAX_NUM_CPU_DEVICES devices, so
# a multi-host run (sharded batch, cross-process all-reduce over gloo, Orbax
# checkpoints written by all processes) can be tried and tested anywhere.
#
#   launch/local_multiprocess.sh [-n PROCESSES] [-d CPU_DEVICES] -- \
#       python -m jaxcolor.main --config configs/default.py:smoke --workdir /tmp/mp
#
# Options and environment (options win):
#   -n, JAXCOLOR_NUM_PROCESSES  processes (default 2)
#   -d, JAX_NUM_CPU_DEVICES     simulated CPU devices per process (default: JAX's, 1)
#   JAXCOLOR_PORT               coordinator port (default: a free one)
#   JAXCOLOR_GPUS_PER_PROCESS   with GPUs: process i gets GPUs i*G .. i*G+G-1
#                               (JAX_LOCAL_DEVICE_IDS); unset: JAX decides
#   JAXCOLOR_LOG_DIR            logs of processes 1.. N-1 (default: a new
#                               temporary folder); process 0 prints here
#   JAXCOLOR_STOP_GRACE_S       on Ctrl-C / SIGTERM: seconds the processes get
#                               to checkpoint before SIGKILL (default 300)
# Exit status: the first failing process's, after stopping the others.
set -euo pipefail

num_processes="${JAXCOLOR_NUM_PROCESSES:-2}"
cpu_devices="${JAX_NUM_CPU_DEVICES:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) num_processes="$2"; shift 2 ;;
    -d) cpu_devices="$2"; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
if [[ $# -eq 0 ]]; then
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
python="${PYTHON:-python3}"
port="${JAXCOLOR_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
log_dir="${JAXCOLOR_LOG_DIR:-$(mktemp -d -t jaxcolor_processes.XXXXXX)}"
mkdir -p "$log_dir"

pids=()
# SIGTERM to every process, then SIGKILL to those still running after $1
# seconds. Under jax.distributed, SIGTERM is a preemption notice: the
# processes agree on a step, checkpoint and exit; a process whose peer died
# cannot (its collectives wait for the peer), hence the SIGKILL.
stop_all() {
  local grace="$1" pid waited=0
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  while ((waited < grace)); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 1
    waited=$((waited + 1))
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
# Ctrl-C / SIGTERM to this script: the run checkpoints at an agreed step.
trap 'stop_all "${JAXCOLOR_STOP_GRACE_S:-300}"; exit 130' INT TERM

# Huge pages for host allocations (jaxcolor/runtime/host_memory.py): glibc reads the
# tunable at process start, so the launcher sets it; a user's own
# glibc.malloc.hugetlb is kept.
case ":${GLIBC_TUNABLES:-}:" in
  *":glibc.malloc.hugetlb="*) ;;
  *) GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1" ;;
esac

for ((i = 0; i < num_processes; i++)); do
  env_vars=(GLIBC_TUNABLES="$GLIBC_TUNABLES" JAXCOLOR_DISTRIBUTED=1
            JAXCOLOR_COORDINATOR="127.0.0.1:$port"
            JAXCOLOR_NUM_PROCESSES="$num_processes" JAXCOLOR_PROCESS_ID="$i")
  if [[ -n "$cpu_devices" ]]; then
    env_vars+=(JAX_NUM_CPU_DEVICES="$cpu_devices")
  fi
  if [[ -n "${JAXCOLOR_GPUS_PER_PROCESS:-}" ]]; then
    g="$JAXCOLOR_GPUS_PER_PROCESS"
    env_vars+=(JAX_LOCAL_DEVICE_IDS="$(seq -s, $((i * g)) $((i * g + g - 1)))")
  fi
  if [[ $i -eq 0 ]]; then
    env "${env_vars[@]}" "$@" &
  else
    env "${env_vars[@]}" "$@" > "$log_dir/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done
echo "local_multiprocess: $num_processes processes, coordinator 127.0.0.1:$port," \
     "logs of processes 1..$((num_processes - 1)) in $log_dir" >&2

status=0
running=("${pids[@]}")
while [[ ${#running[@]} -gt 0 ]]; do
  set +e
  wait -n -p finished "${running[@]}"
  code=$?
  set -e
  still=()
  for pid in "${running[@]}"; do
    [[ "$pid" == "$finished" ]] || still+=("$pid")
  done
  running=("${still[@]}")
  if [[ $code -ne 0 && $status -eq 0 ]]; then
    status=$code
    for ((i = 1; i < num_processes; i++)); do
      if [[ "${pids[$i]}" == "$finished" ]]; then
        echo "local_multiprocess: process $i failed ($code); its log ends:" >&2
        tail -n 30 "$log_dir/process_$i.log" >&2
      fi
    done
    stop_all 10
  fi
done
exit "$status"
