#!/usr/bin/env bash
# mkbundle.sh NAME [BUILD]: a carryable copy of the build (stripped) in .device/NAME.tar.xz
set -euo pipefail
cd "$(dirname "$0")"
name=$1; build=${2:-../build}
rm -rf "$name"; mkdir -p "$name"/bin "$name"/plugins "$name"/lib "$name"/src
for b in ${BINS:-nnpar test_cuda}; do cp "$build/bin/$b" "$name/bin/"; done
cp "$build"/plugins/*.so "$name/plugins/"
cp -P "$build"/lib/*.so* "$name/lib/"
bash ../tools/bundle_runtime_libs.sh "$build" "$name/lib" >/dev/null
strip --strip-unneeded "$name"/bin/* "$name"/plugins/*.so 2>/dev/null || true
cp -r ../bench ../tools ../configs "$name/src/"
tar cJf "$name.tar.xz" "$name"; rm -rf "$name"
ls -la "$name.tar.xz"
