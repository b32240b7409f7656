# Shared by demo.sh and test.sh: install what is missing with apt-get, configure, build.
set -euo pipefail

NNPAR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NNPAR_BUILD=${NNPAR_BUILD:-$NNPAR_ROOT/build}

NNPAR_BUILD_PACKAGES=(
  g++ cmake ninja-build pkg-config git
  libtomlplusplus-dev libcli11-dev libboost-dev libboost-filesystem-dev
  nlohmann-json3-dev zlib1g-dev libgtest-dev libgmock-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin
  libcpp-httplib-dev libpng-dev
)
# scripts/fuzz.sh: clang with libFuzzer and the sanitizer runtimes.
NNPAR_FUZZ_PACKAGES=(clang libclang-rt-14-dev llvm-14)
# The fallback letter generator (tools/make_letters.py) and its handwriting-style fonts.
NNPAR_DATA_PACKAGES=(
  python3 python3-numpy python3-pil
  fonts-dkg-handwriting fonts-comic-neue fonts-humor-sans fonts-sjfonts
)

# `nnpar report` (tools/nnpar_report.py) and its tests: figures with matplotlib.
NNPAR_REPORT_PACKAGES=(python3 python3-matplotlib python3-numpy)

# Installs the packages that are not installed yet (nothing is fetched when all are there).
install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build_nnpar() {
  echo "==> configuring and building in $NNPAR_BUILD"
  cmake -S "$NNPAR_ROOT" -B "$NNPAR_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
  cmake --build "$NNPAR_BUILD" -j "$(nproc)"
}

# Sets NNPAR_DATA to a folder with the letters dataset: $NNPAR_DATA if set, else
# ../shared/data beside the repository, else a small generated set in data/generated.
find_or_make_data() {
  local shared="$NNPAR_ROOT/../shared/data"
  if [ -n "${NNPAR_DATA:-}" ]; then
    echo "==> data: $NNPAR_DATA (NNPAR_DATA)"
  elif [ -f "$shared/letters-train-images-idx3-ubyte.gz" ]; then
    export NNPAR_DATA=$(cd "$shared" && pwd)
    echo "==> data: $NNPAR_DATA"
  else
    export NNPAR_DATA="$NNPAR_ROOT/data/generated"
    if [ ! -f "$NNPAR_DATA/letters-test-labels-idx1-ubyte.gz" ]; then
      echo "==> no dataset found: generating a small one in $NNPAR_DATA (tools/make_letters.py)"
      python3 "$NNPAR_ROOT/tools/make_letters.py" --out "$NNPAR_DATA"
    fi
    echo "==> data: $NNPAR_DATA (generated)"
  fi
}
