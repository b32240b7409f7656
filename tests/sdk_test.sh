#!/usr/bin/env bash
# The out-of-tree plugin workflow end to end, as a user would run it: install nnpar into a
# fresh prefix, build examples/strategy-template against that prefix ONLY (a separate cmake,
# so nothing of the build tree leaks in), then have the installed nnpar load the plugin
# through NNPAR_PLUGIN_PATH and check it against serial. Finally the installed nnpar must
# refuse plugins built for another strategy ABI (an in-tree test plugin, and the template
# built against headers with another ABI version) with the documented message and exit 2.
#   sdk_test.sh BUILD_DIR SOURCE_DIR DATA_DIR ABI_PLUGIN_DIR
set -euo pipefail
build_dir=$(realpath "$1") source_dir=$(realpath "$2") data_dir=$3 abi_plugin_dir=$(realpath "$4")

if [[ ! -d $data_dir ]]; then
  echo "SKIP: no letters dataset in $data_dir (NNPAR_TEST_DATA_DIR)"
  exit 77
fi
data_dir=$(realpath "$data_dir")

work=$(realpath "$(mktemp -d "${TMPDIR:-/tmp}/nnpar-sdk.XXXXXX")")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
run() { echo "+ $*"; "$@"; }

run cmake --install "$build_dir" --prefix "$prefix" > "$work/install.log"
echo "installed $(wc -l < "$work/install.log") files into $prefix"

generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
run cmake -S "$source_dir/examples/strategy-template" -B "$work/ring-build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix"
run cmake --build "$work/ring-build"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export NNPAR_DATA=$data_dir
# Results are written relative to the working folder: keep them in the temporary one.
cd "$work"
status=0
NNPAR_PLUGIN_PATH=$work/ring-build run "$prefix/bin/nnpar" compare \
  "$source_dir/examples/strategy-template/compare.toml" > compare.log 2>&1 || status=$?
cat compare.log
[[ $status -eq 0 ]] || { echo "FAIL: nnpar compare exited with $status"; exit 1; }
for label in ring-data-2 ring-data-3; do
  grep -E "^$label .* PASS" compare.log > /dev/null || { echo "FAIL: no PASS for $label"; exit 1; }
done

# ABI mismatch, in-tree: the test plugin tests/plugins/abi_mismatch.cpp claims
# kStrategyAbiVersion + 1000; list-plugins shows it as broken, with the reason.
out=$(run "$prefix/bin/nnpar" list-plugins --plugin-path "$abi_plugin_dir" 2>&1 || true)
echo "$out"
grep -F "built for strategy ABI version" <<< "$out" | grep -F "rebuild the plugin against this nnpar's headers" \
  > /dev/null || { echo "FAIL: no ABI mismatch message from the installed nnpar"; exit 1; }
# The built-in copy of the template strategy is installed with the other plugins.
grep -qF "file: $prefix/lib/nnpar/plugins/nnpar_strategy_mpi-ring.so" <<< "$out" ||
  { echo "FAIL: the installed nnpar does not list its mpi-ring plugin"; exit 1; }

# ABI mismatch, out of tree: the template built against the headers of an nnpar whose strategy
# ABI is one newer (a copy of the installed headers with kStrategyAbiVersion bumped, searched
# before the installed ones), as if built against another release. The installed nnpar must
# refuse it with the message docs/plugins.md quotes, and exit 2, before any training.
abi=$(sed -n 's/.*kStrategyAbiVersion = \([0-9][0-9]*\);.*/\1/p' "$prefix/include/nnpar/strategy.hpp")
[[ -n $abi ]] || { echo "FAIL: no kStrategyAbiVersion in the installed strategy.hpp"; exit 1; }
other=$((abi + 1))
mkdir -p "$work/other-abi"
cp -r "$prefix/include" "$work/other-abi/"
sed -i "s/kStrategyAbiVersion = $abi;/kStrategyAbiVersion = $other;/" "$work/other-abi/include/nnpar/strategy.hpp"
grep -qF "kStrategyAbiVersion = $other;" "$work/other-abi/include/nnpar/strategy.hpp"
run cmake -S "$source_dir/examples/strategy-template" -B "$work/ring-other-abi" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_FLAGS="-I$work/other-abi/include" \
  > "$work/other-abi.log"
run cmake --build "$work/ring-other-abi" >> "$work/other-abi.log"
status=0
out=$(NNPAR_PLUGIN_PATH=$work/ring-other-abi run "$prefix/bin/nnpar" compare \
  "$source_dir/examples/strategy-template/compare.toml" --only ring-data-2 2>&1) || status=$?
echo "$out"
expected="nnpar: plugin error: plugin '$work/ring-other-abi/nnpar_strategy_ring-data.so': built for strategy ABI version $other, but this nnpar uses ABI version $abi; rebuild the plugin against this nnpar's headers"
grep -qxF "$expected" <<< "$out" || { echo "FAIL: expected the line: $expected"; exit 1; }
[[ $status -eq 2 ]] || { echo "FAIL: nnpar compare exited with $status for an ABI mismatch, not 2"; exit 1; }
! grep -q "epoch 1/" <<< "$out" || { echo "FAIL: training started despite the ABI mismatch"; exit 1; }
echo "OK: installed package builds and runs an out-of-tree strategy; ABI mismatches refused (exit 2)"
