#!/usr/bin/env bash
# Runs the engine's unit tests under Miri (undefined behaviour, out-of-bounds
# and alignment checks) and prints how long it took. Needs the nightly
# toolchain with the miri component: `rustup +nightly component add miri`.
#
# The engine is built without `std` here, so its kernels are chosen at
# compile time: the scalar path (no AVX2 target feature is enabled), which is
# what Miri can interpret. The few tests that multiply large matrices or draw
# many samples (to check frequencies) take tens of minutes each under Miri
# and are skipped; the quick tests run the same code at smaller sizes.
# Extra arguments go to the test harness (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

skip=(
  kernels::matmul::tests::float_matmul_is_bit_identical_to_matvec_per_position
  kernels::matmul::tests::quantized_matmul_is_bit_identical_to_the_integer_dots
  kernels::scalar::tests::matvec_matches_f64_for_every_float_dtype_and_awkward_sizes
  kernels::scalar::tests::half_precision_matvec_equals_f32_matvec_of_dequantized_weights
  sampler::tests::unfiltered_frequencies_follow_the_softmax
  sampler::tests::top_k_keeps_the_k_best_and_ties
  sampler::tests::top_p_keeps_the_smallest_set_exceeding_p
  tokenizer::tests::streaming_matches_lossy_utf8_however_the_bytes_are_cut
)
args=()
for t in "${skip[@]}"; do args+=(--skip "$t"); done

start=$(date +%s)
KINGLET_KERNELS=scalar MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-env-forward=KINGLET_KERNELS" \
  cargo +nightly miri test -p kinglet --lib -- "${args[@]}" "$@"
end=$(date +%s)
echo "miri: engine unit tests passed in $((end - start)) s (skipped ${#skip[@]} slow tests)"
