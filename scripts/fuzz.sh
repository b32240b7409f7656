#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan, in build-fuzz/) and runs each for a
# fixed time on its seed corpus (tests/fuzz/corpus/<target>). Any crash, sanitizer report or
# unexpected exception fails the script; the reproducer is left in build-fuzz/fuzz-artifacts/.
#
#   scripts/fuzz.sh                 60 s per target
#   scripts/fuzz.sh 20              20 s per target (what CI runs)
#   scripts/fuzz.sh 600 fuzz_idx    one target, ten minutes
# The inputs found are kept in build-fuzz/fuzz-corpus/<target> and reused by the next run;
# copy interesting ones into tests/fuzz/corpus/ to keep them.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_config fuzz_idx fuzz_csv fuzz_safetensors)
FUZZ_BUILD=${NNPAR_FUZZ_BUILD:-$NNPAR_ROOT/build-fuzz}

install_packages "${NNPAR_BUILD_PACKAGES[@]}" "${NNPAR_FUZZ_PACKAGES[@]}"
echo "==> configuring and building the fuzz targets in $FUZZ_BUILD (clang, ASan + UBSan)"
cmake -S "$NNPAR_ROOT" -B "$FUZZ_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DNNPAR_BUILD_FUZZERS=ON \
  -DNNPAR_ENABLE_CUDA=OFF -DNNPAR_BUILD_TESTS=OFF -DNNPAR_BUILD_BENCH=OFF > "$FUZZ_BUILD.configure.log" \
  || { cat "$FUZZ_BUILD.configure.log"; exit 1; }
cmake --build "$FUZZ_BUILD" --target nnpar_fuzzers -j "$(nproc)"

failed=()
mkdir -p "$FUZZ_BUILD/fuzz-artifacts"
for target in "${TARGETS[@]}"; do
  corpus="$FUZZ_BUILD/fuzz-corpus/$target"
  mkdir -p "$corpus"
  echo "==> $target for ${SECONDS_PER_TARGET}s"
  # -rss_limit_mb/-malloc_limit_mb: a loader that believes a corrupt size field and allocates
  # gigabytes is a finding too. The seeds come second: new inputs are written to the first folder.
  if ! "$FUZZ_BUILD/bin/$target" "$corpus" "$NNPAR_ROOT/tests/fuzz/corpus/$target" \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$FUZZ_BUILD/fuzz-artifacts/$target-" \
      2> "$FUZZ_BUILD/fuzz-artifacts/$target.log"; then
    failed+=("$target")
    tail -n 60 "$FUZZ_BUILD/fuzz-artifacts/$target.log"
  fi
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+ *DONE" \
    "$FUZZ_BUILD/fuzz-artifacts/$target.log" || true
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "==> fuzzing found problems in: ${failed[*]} (reproducers in $FUZZ_BUILD/fuzz-artifacts/)"
  exit 1
fi
echo "==> no crashes in ${TARGETS[*]}"
