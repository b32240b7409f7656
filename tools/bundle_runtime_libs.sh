#!/usr/bin/env bash
# Copies the shared libraries a build needs that a GPU machine may lack (toml++, Boost, and
# cpp-httplib with its brotli and libpng for nnpar serve)
# into DEST (default BUILD_DIR/lib), so the build folder can be carried to another machine
# and run there with LD_LIBRARY_PATH=DEST (or, with the default DEST, through the binaries'
# relative RPATH). System libraries (glibc, libstdc++, zlib) and the ones the target
# provides itself (CUDA, NCCL, MPI) are left out. Copying into the build's own lib/ makes
# CMake warn about shadowed system libraries on the next configure: prefer a separate DEST.
set -euo pipefail
build=${1:?usage: bundle_runtime_libs.sh BUILD_DIR [DEST]}
dest=${2:-$build/lib}
mkdir -p "$dest"
for elf in "$build"/bin/* "$build"/plugins/*.so "$build"/lib/libnnpar_*.so*; do
  [ -f "$elf" ] || continue
  ldd "$elf" 2>/dev/null | awk '/=> \// {print $3}'
done | sort -u | grep -E 'libtomlplusplus|libboost_|libcpp-httplib|libbrotli|libpng16' | while read -r lib; do
  cp -L "$lib" "$dest/"
  echo "bundled $(basename "$lib") into $dest"
done
