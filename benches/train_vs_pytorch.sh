#!/usr/bin/env bash
# Training speed of kinglet-train against the same model and optimizer step
# in plain PyTorch (benches/pytorch_train.py: CPU, float32, eager, no
# torch.compile; its header says what matches and what differs), same CPU,
# same thread count. Two shapes:
#   seed     kinglet-train's seed preset (context 16, d_model 128, 4 layers,
#            8 heads, SwiGLU hidden 352, batch 32, untied classifier)
#   nanogpt  nanoGPT's shakespeare-char size (context 256, d_model 384,
#            6 layers, 6 heads, SwiGLU hidden 1024, batch 16, tied classifier)
# each with 1 and 2 threads. The two programs alternate (and swap which goes
# first every round), ROUNDS times; the table gives each one's median
# tokens/s, the range over the rounds, and the ratio of the medians.
# tokens/s = batch · context · timed steps / their wall time; the first
# WARMUP steps of every run are not timed (for kinglet-train: the span
# between its metrics lines at step WARMUP and at the last step).
#
#   PYTHON=/path/to/venv/bin/python bash benches/train_vs_pytorch.sh [ROUNDS]
#
# Such an interpreter: python3 -m venv venv && venv/bin/pip install torch
# (PyPI's wheel brings CUDA packages, 5.4 GB installed, and runs on the CPU).
#
# ROUNDS defaults to 3. Environment: PYTHON (an interpreter with torch,
# default python3), KINGLET_DATA (directory of tinyshakespeare.txt, default
# ../shared/data), KINGLET_TRAIN (a kinglet-train binary to measure instead
# of building one; otherwise `cargo build --release`, honoring
# CARGO_TARGET_DIR), SEED_STEPS and NANOGPT_STEPS (timed steps per run,
# default 600 and 8), WARMUP (untimed steps before them, default 2). From
# the CPU time of short runs on a Zen 4, the defaults make each run take
# about 15-70 s, and the whole bench about 15 minutes with 3 rounds.
# Run with the machine as quiet as you can get it: the CPU and the load
# average before and after are printed with the results.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
python=${PYTHON:-python3}
data=${KINGLET_DATA:-../shared/data}/tinyshakespeare.txt
seed_steps=${SEED_STEPS:-600}
nanogpt_steps=${NANOGPT_STEPS:-8}
warmup=${WARMUP:-2}

if [ -n "${KINGLET_TRAIN:-}" ]; then
  bin=$KINGLET_TRAIN
else
  cargo build --release -p kinglet-trainer --bin kinglet-train
  bin=${CARGO_TARGET_DIR:-$PWD/target}/release/kinglet-train
fi
"$python" -c 'import torch' || { echo "$python cannot import torch (set PYTHON)" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Both programs get the same shape flags; kinglet-train starts from its seed
# preset (batch 32, lr 1e-3 constant, AdamW 0.9/0.95, wd 0.1), as the
# PyTorch script's presets do.
shape() { # workload
  case $1 in
    seed) echo "--context 16 --dim 128 --layers 4 --heads 8 --hidden 352 --batch 32 --tied false" ;;
    nanogpt) echo "--context 256 --dim 384 --layers 6 --heads 6 --hidden 1024 --batch 16 --tied true" ;;
  esac
}
steps_of() { [ "$1" = seed ] && echo "$seed_steps" || echo "$nanogpt_steps"; }

# tokens/s of one kinglet-train run over its steps after the warm-up, from
# the metrics lines it writes at step $warmup and at the last step (each
# with the step and the seconds since the first step began).
run_kinglet() { # workload threads
  local out=$scratch/run steps total log_every
  steps=$(steps_of "$1")
  total=$((warmup + steps))
  log_every=$((warmup > 0 ? warmup : total))
  rm -rf "$out"
  # shellcheck disable=SC2046
  "$bin" --preset seed $(shape "$1") --threads "$2" --steps "$total" --data "$data" \
    --out "$out" --quiet --eval-every 0 --eval-windows 1 --sample-len 0 --save-every 0 \
    --log-every "$log_every" >/dev/null
  awk -v w="$warmup" -v total="$total" -v per_step="$(tokens_per_step "$1")" '
    { step = $0; sub(/.*"step":/, "", step); sub(/[,}].*/, "", step)
      t = $0; sub(/.*"elapsed_s":/, "", t); sub(/[,}].*/, "", t)
      if (step + 0 == w) t0 = t
      if (step + 0 == total) t1 = t }
    END { if (w == 0) t0 = 0; printf "%.0f\n", (total - w) * per_step / (t1 - t0) }' "$out/metrics.jsonl"
}

run_pytorch() { # workload threads
  # shellcheck disable=SC2046
  OMP_NUM_THREADS=$2 "$python" benches/pytorch_train.py --preset "$1" $(shape "$1") \
    --threads "$2" --steps "$(steps_of "$1")" --warmup "$warmup" --data "$data" |
    sed -n 's/^tokens\/s //p'
}

# The value of a flag in a workload's shape.
shape_value() { # workload flag
  local flag=$2
  set -- $(shape "$1")
  while [ $# -gt 1 ] && [ "$1" != "$flag" ]; do shift; done
  echo "$2"
}
tokens_per_step() { echo $(($(shape_value "$1" --context) * $(shape_value "$1" --batch))); }

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
range() { sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }

cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
avx512=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep '^avx512' | tr '\n' ' ' | sed 's/ *$//' || true)
echo "CPU: $cpu; $(nproc) cores; AVX-512: ${avx512:-none}"
echo "torch: $("$python" -c 'import torch; print(torch.__version__, torch.backends.cpu.get_cpu_capability())')"
echo "rounds: $rounds; timed steps: seed $seed_steps, nanogpt $nanogpt_steps; warm-up $warmup"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

declare -A runs=()
for ((round = 0; round < rounds; round++)); do
  for workload in seed nanogpt; do
    for threads in 1 2; do
      key="$workload $threads"
      if ((round % 2 == 0)); then
        runs[kinglet $key]+="$(run_kinglet "$workload" "$threads") "
        runs[pytorch $key]+="$(run_pytorch "$workload" "$threads") "
      else
        runs[pytorch $key]+="$(run_pytorch "$workload" "$threads") "
        runs[kinglet $key]+="$(run_kinglet "$workload" "$threads") "
      fi
    done
  done
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| workload | threads | kinglet-train tokens/s (range) | PyTorch tokens/s (range) | ratio |"
echo "|---|---:|---:|---:|---:|"
for workload in seed nanogpt; do
  for threads in 1 2; do
    key="$workload $threads"
    k=$(tr ' ' '\n' <<<"${runs[kinglet $key]}" | grep . | median)
    p=$(tr ' ' '\n' <<<"${runs[pytorch $key]}" | grep . | median)
    kr=$(tr ' ' '\n' <<<"${runs[kinglet $key]}" | grep . | range)
    pr=$(tr ' ' '\n' <<<"${runs[pytorch $key]}" | grep . | range)
    printf '| %s | %s | %.0f (%s) | %.0f (%s) | %.2fx |\n' "$workload" "$threads" \
      "$k" "$kr" "$p" "$pr" "$(awk -v a="$k" -v b="$p" 'BEGIN {print a / b}')"
  done
done
