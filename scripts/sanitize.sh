#!/usr/bin/env bash
# The CPU test suite under AddressSanitizer + UndefinedBehaviorSanitizer (GCC): configures
# build-asan/ with the `asan` CMake preset (NNPAR_SANITIZE=address,undefined), builds, and runs
# ctest with the preset's sanitizer options (tests/sanitizers/lsan.supp silences OpenMPI's
# intentional leaks). Any report fails its test. Extra arguments go to ctest, e.g.
#   scripts/sanitize.sh -R test_data
# About 3x slower than the normal suite; not part of CI (docs/reliability.md has its results).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
install_packages "${NNPAR_BUILD_PACKAGES[@]}" "${NNPAR_DATA_PACKAGES[@]}"
find_or_make_data
cd "$NNPAR_ROOT"
cmake --preset asan -DNNPAR_TEST_DATA_DIR="$NNPAR_DATA"
cmake --build --preset asan -j "$(nproc)"
echo "==> ctest under ASan + UBSan"
ctest --preset asan -j "$(nproc)" "$@"
