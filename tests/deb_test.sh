#!/usr/bin/env bash
# The Debian package (cmake/NnparPackaging.cmake): build it with cpack from the build folder,
# check its fields and file list with dpkg-deb, check that Depends names exactly the Debian
# packages whose shared libraries the packaged binaries link, and run the packaged nnpar from
# an unpacked copy to see that it finds its own plugins.
#   deb_test.sh BUILD_DIR VERSION
set -euo pipefail
build_dir=$(realpath "$1") version=$2
fail() { echo "FAIL: $*"; exit 1; }
for tool in cpack dpkg-deb dpkg readelf ldd; do
  command -v $tool > /dev/null || { echo "SKIP: $tool not installed"; exit 77; }
done

work=$(realpath "$(mktemp -d "${TMPDIR:-/tmp}/nnpar-deb.XXXXXX")")
trap 'rm -rf "$work"' EXIT
arch=$(dpkg --print-architecture)

echo "+ cpack -G DEB --config $build_dir/CPackConfig.cmake -B $work"
(cd "$build_dir" && cpack -G DEB --config "$build_dir/CPackConfig.cmake" -B "$work") > "$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log"; fail "cpack exited with an error"; }
deb=$work/nnpar_${version}_${arch}.deb
[[ -f $deb ]] || { ls "$work"; fail "no $(basename "$deb")"; }
echo "built $(basename "$deb"), $(du -k "$deb" | cut -f1) KiB"

dpkg-deb -I "$deb"
field() { dpkg-deb -f "$deb" "$1"; }
[[ $(field Package) == nnpar ]] || fail "Package is '$(field Package)'"
[[ $(field Version) == "$version" ]] || fail "Version is '$(field Version)', the project's is $version"
[[ $(field Architecture) == "$arch" ]] || fail "Architecture is '$(field Architecture)'"
depends=$(field Depends)
[[ -n $depends ]] || fail "no Depends field"
mapfile -t declared < <(tr ',' '\n' <<< "$depends" | sed 's/(.*)//; s/^ *//; s/ *$//' | grep -v '^$')
echo "Depends: ${declared[*]}"

listing=$(dpkg-deb -c "$deb" | awk '{print $6}')
for path in ./usr/bin/nnpar \
            ./usr/lib/nnpar/plugins/nnpar_strategy_serial.so \
            ./usr/lib/nnpar/plugins/nnpar_strategy_mpi-data.so \
            ./usr/lib/nnpar/plugins/nnpar_strategy_mpi-ring.so \
            "./usr/lib/libnnpar_core.so.$version" \
            ./usr/lib/libnnpar_comm_mpi.so \
            ./usr/include/nnpar/strategy.hpp \
            ./usr/include/nnpar/data_parallel.hpp \
            ./usr/include/nnpar/comm_mpi.hpp \
            ./usr/lib/cmake/nnpar/nnparConfig.cmake \
            ./usr/lib/cmake/nnpar/nnparConfigVersion.cmake \
            ./usr/lib/cmake/nnpar/nnparTargets.cmake \
            ./usr/lib/cmake/nnpar/nnparStrategy.cmake \
            ./usr/share/nnpar/nnpar_report.py; do
  grep -qxF "$path" <<< "$listing" || fail "$path is not in the package"
done
# Test-only plugins (tests/plugins) must never be shipped.
! grep -E 'abi_mismatch|gpu_only|mpi_dies|no_factory|bad_name' <<< "$listing" || fail "a test plugin is in the package"
echo "file list: $(wc -l <<< "$listing") entries, the expected ones present"

# Unpack and look at every packaged ELF file's direct dependencies (NEEDED): each must resolve
# inside the package (relative RPATHs) or to a file of a package in Depends.
root=$work/root
dpkg-deb -x "$deb" "$root"
owner() {  # the package owning a library path; dpkg knows some under /lib, some under /usr/lib
  local p=$1 c
  for c in "$p" "$(realpath "$p")" "/usr${p#/usr}" "${p#/usr}"; do
    dpkg -S "$c" 2> /dev/null | head -1 | cut -d: -f1 && return 0
  done
  return 1
}
declare -A needed_by=()
while IFS= read -r elf; do
  case $(basename "$elf") in
    # The GPU pieces link NVIDIA's libraries, which are Suggests, not Depends.
    nnpar_strategy_cuda* | nnpar_strategy_nccl-* | nnpar-calibrate-gpu) continue ;;
  esac
  resolved=$(ldd "$elf")
  for lib in $(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    # "libx.so.1 => /path (addr)", or "/lib64/ld-linux-x86-64.so.2 (addr)" for the loader
    path=$(awk -v l="$lib" '$1 == l && $2 == "=>" {print $3; exit} {n = split($1, a, "/")} n > 1 && a[n] == l {print $1; exit}' <<< "$resolved")
    [[ -n $path && $path != "not" ]] || fail "$elf: $lib is not found (ldd)"
    [[ $path == "$root"/* ]] && continue
    pkg=$(owner "$path") || fail "$elf: $lib ($path) belongs to no Debian package"
    needed_by[$pkg]+=" $(basename "$elf")"
  done
done < <(find "$root/usr" -type f \( -perm -u+x -o -name '*.so*' \) -exec sh -c 'head -c4 "$1" | grep -q ELF' _ {} \; -print)
for pkg in "${!needed_by[@]}"; do
  printf '%s\n' "${declared[@]}" | grep -qxF "$pkg" || fail "Depends lacks $pkg, needed by${needed_by[$pkg]}"
done
for pkg in "${declared[@]}"; do
  [[ $pkg == openmpi-bin ]] && continue  # mpirun, started by the harness: not a library
  [[ -n ${needed_by[$pkg]:-} ]] || fail "Depends names $pkg, but no packaged file links a library of it"
done
printf '%s\n' "${declared[@]}" | grep -qxF openmpi-bin || fail "Depends lacks openmpi-bin (mpirun)"
echo "Depends matches the libraries linked: ${!needed_by[*]} + openmpi-bin"

# The packaged nnpar, moved to another folder, still finds its libraries and its plugins.
out=$(env -u NNPAR_PLUGIN_PATH "$root/usr/bin/nnpar" list-plugins 2>&1) || { echo "$out"; fail "list-plugins failed"; }
for plugin in serial mpi-data mpi-ring; do
  grep -qF "file: $root/usr/lib/nnpar/plugins/nnpar_strategy_$plugin.so" <<< "$out" ||
    { echo "$out"; fail "the unpacked nnpar does not list its $plugin plugin"; }
done
! grep -qF "(broken)" <<< "$out" || { echo "$out"; fail "a packaged plugin does not load"; }
echo "OK: $(basename "$deb") has the expected files, fields and Depends, and runs unpacked"
