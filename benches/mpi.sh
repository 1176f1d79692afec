#!/usr/bin/env bash
# Training speed of data parallelism on this machine: one process with 2
# threads, 2 MPI ranks with 1 thread each (shared memory, and TCP over the
# loopback interface), and 1 process with 1 thread, on the seed and small
# presets. Runs alternate, ROUNDS times; each figure is the median of the
# tokens/s that rank 0 logs after the last step (startup excluded). All four
# configurations compute the same bits (trainer/tests/mpi.rs checks that).
#
#   bash benches/mpi.sh [ROUNDS]       (Open MPI installed; ../shared/data)
#
# Run with the machine as quiet as you can get it; the load average and the
# CPU are printed with the results.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
data=${KINGLET_DATA:-../shared/data}/tinyshakespeare.txt
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# KINGLET_TRAIN: an MPI-enabled kinglet-train to measure instead of building one.
if [ -n "${KINGLET_TRAIN:-}" ]; then
  bin=$KINGLET_TRAIN
else
  cargo build --release -p kinglet-trainer --features mpi --bin kinglet-train
  bin=$PWD/target/release/kinglet-train
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

configs=("1 process x 2 threads" "2 ranks x 1 thread" "2 ranks x 1 thread, TCP" "1 process x 1 thread")
launch() {
  case $1 in
    0) "$bin" --threads 2 "${@:2}" ;;
    1) mpirun -np 2 --mca btl self,vader "$bin" --threads 1 "${@:2}" ;;
    2) mpirun -np 2 --mca btl self,tcp --mca btl_tcp_if_include lo "$bin" --threads 1 "${@:2}" ;;
    3) "$bin" --threads 1 "${@:2}" ;;
  esac
}

# tokens/s of one run: the last metrics line's, written right after the
# last step (before the final evaluation and save).
measure() { # config preset steps
  local out=$scratch/run
  rm -rf "$out"
  launch "$1" --preset "$2" --steps "$3" --data "$data" --out "$out" --quiet \
    --eval-every 0 --eval-windows 1 --sample-len 0 --save-every 0 --log-every "$3" >/dev/null
  sed -n 's/.*"tokens_per_s":\([0-9.]*\).*/\1/p' "$out/metrics.jsonl" | tail -1
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

printf 'CPU: %s; %s cores\n' "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$(nproc)"
for preset_steps in "seed 100" "small 10"; do
  set -- $preset_steps
  preset=$1 steps=$2
  declare -A runs=()
  printf '\n%s preset, %s steps, %s rounds; load average before: %s\n' \
    "$preset" "$steps" "$rounds" "$(cut -d' ' -f1-3 /proc/loadavg)"
  for ((round = 0; round < rounds; round++)); do
    for c in 0 1 2 3; do
      runs[$c]+="$(measure "$c" "$preset" "$steps") "
    done
  done
  base=$(tr ' ' '\n' <<<"${runs[3]}" | grep . | median)
  for c in 0 1 2 3; do
    m=$(tr ' ' '\n' <<<"${runs[$c]}" | grep . | median)
    printf '  %-26s %8.0f tokens/s  %5.2fx  (runs: %s)\n' "${configs[$c]}" "$m" \
      "$(awk -v a="$m" -v b="$base" 'BEGIN {print a / b}')" "${runs[$c]% }"
  done
  printf '  load average after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  unset runs
done
