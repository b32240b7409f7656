#!/usr/bin/env bash
# Copies the shared libraries a build needs that a GPU machine may lack (toml++, Boost)
# into BUILD/lib, so the build folder can be carried to another machine and run there
# (binaries find lib/ through their relative RPATH). System libraries (glibc, libstdc++,
# zlib) and the ones the target provides itself (CUDA, NCCL, MPI) are left out.
set -euo pipefail
build=${1:?usage: bundle_runtime_libs.sh BUILD_DIR}
mkdir -p "$build/lib"
for elf in "$build"/bin/* "$build"/plugins/*.so "$build"/lib/libnnpar_core.so*; do
  [ -f "$elf" ] || continue
  ldd "$elf" 2>/dev/null | awk '/=> \// {print $3}'
done | sort -u | grep -E 'libtomlplusplus|libboost_' | while read -r lib; do
  cp -L "$lib" "$build/lib/"
  echo "bundled $(basename "$lib")"
done
