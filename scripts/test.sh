#!/usr/bin/env bash
# The test suite: install what is missing (PyTorch too, for the reference checks, and
# Chromium for nnpar serve's browser test), build, and run every test under ctest. GPU tests
# skip visibly on machines without a GPU.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
install_packages "${NNPAR_BUILD_PACKAGES[@]}" "${NNPAR_DATA_PACKAGES[@]}" "${NNPAR_REPORT_PACKAGES[@]}" python3-torch chromium python3-websocket
find_or_make_data
build_nnpar -DNNPAR_TEST_DATA_DIR="$NNPAR_DATA"
cd "$NNPAR_BUILD"
echo "==> ctest"
ctest --output-on-failure -j "$(nproc)" "$@"
