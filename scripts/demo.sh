#!/usr/bin/env bash
# The demo: install what is missing, build, and compare strategies on the letters data
# (configs/demo.toml, under a minute on 2 cores). Extra arguments go to `nnpar compare`.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
install_packages "${NNPAR_BUILD_PACKAGES[@]}" "${NNPAR_DATA_PACKAGES[@]}"
build_nnpar
find_or_make_data
cd "$NNPAR_ROOT"
echo "==> $NNPAR_BUILD/bin/nnpar compare configs/demo.toml $*"
exec "$NNPAR_BUILD/bin/nnpar" compare configs/demo.toml "$@"
