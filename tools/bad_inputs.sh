#!/usr/bin/env bash
# Feeds nnpar one broken input at a time and prints a Markdown table of what each gives:
# the case, the exit status and nnpar's error line, as in docs/reliability.md. Every row is a
# real run of the binary in $NNPAR_BUILD (default build/); paths are relative to a scratch
# folder so the messages read as a user would see them.
#   tools/bad_inputs.sh > /tmp/table.md
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${NNPAR_BUILD:-$ROOT/build}
NNPAR=$BUILD/bin/nnpar
DATA=${NNPAR_DATA:-$ROOT/../shared/data}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

ok_config() {  # ok_config FILE [EXTRA TOML]: a valid small run, plus extra lines
  cat > "$1" <<TOML
[data]
dir = "$DATA"
limit = 1000
test_limit = 500
[model]
layers = [784, 16, 26]
[train]
epochs = 2
batch_size = 32
lr = 0.5
${2:-}
[output]
dir = "results"
[[strategy]]
name = "serial"
[[strategy]]
name = "mpi-data"
label = "dp2"
ranks = 2
TOML
}

echo "| input | command | exit | message |"
echo "|---|---|---|---|"
row() {  # row CASE COMMAND...: runs nnpar with the arguments, prints the table row
  local what=$1
  shift
  local out status
  out=$(timeout 120 "$@" 2>&1)
  status=$?
  # The lines a user reads: mpirun's naming of a lost rank and nnpar's own error lines, else
  # the first line (a command-line error).
  local line
  line=$(grep -E "^nnpar: |exited on signal|^ssh: " <<< "$out" | head -n 2 | sed 's/^ *//' | paste -sd '\n' - || true)
  [ -n "$line" ] || line=$(head -n 1 <<< "$out")
  local shown="${*:1}"
  shown=${shown//$NNPAR/nnpar}
  shown=${shown//$WORK\//}
  shown=${shown//$BUILD/build}
  line=${line//$WORK\//}
  line=${line//$BUILD/build}
  line=${line//|/\\|}
  line=$(sed 's/.*/`` & ``/' <<< "$line" | paste -sd '\n' - | sed ':a;N;$!ba;s/\n/<br>/g')
  printf '| %s | `%s` | %s | %s |\n' "$what" "$shown" "$status" "$line"
}
python3=python3

# --- configs --------------------------------------------------------------------------
row "missing config file" "$NNPAR" train nope.toml
mkdir -p adir.toml
row "config is a folder" "$NNPAR" train adir.toml
printf '[train]\nepochs = = 2\n[[strategy]]\nname = "serial"\n' > syntax.toml
row "TOML syntax error" "$NNPAR" train syntax.toml
ok_config typo.toml "lrr = 0.5"
row "misspelt key" "$NNPAR" train typo.toml
ok_config type.toml
sed -i 's/^epochs = 2/epochs = "2"/' type.toml
row "wrong type" "$NNPAR" train type.toml
ok_config ok.toml
row "value out of range" "$NNPAR" train ok.toml --set train.lr=-0.5
row "learning rate beyond float" "$NNPAR" train ok.toml --set train.lr=1e39
row "unknown override key" "$NNPAR" train ok.toml --set train.lrr=1
row "override of an unknown label" "$NNPAR" train ok.toml --set strategy.dp3.mode=sync
printf '[data]\ndir = "${NO_SUCH_VARIABLE}/x"\n[[strategy]]\nname = "serial"\n' > env.toml
row "unset \${VAR} in a path" "$NNPAR" train env.toml
printf '[[strategy]]\nname = "serial"\n[[strategy]]\nname = "serial"\n' > dup.toml
row "duplicate strategy label" "$NNPAR" train dup.toml
row "unknown strategy plugin" "$NNPAR" train ok.toml --strategy warp-drive
row "unknown strategy option" "$NNPAR" train ok.toml --strategy dp2 --set strategy.dp2.mood=sync
row "too many ranks for a plugin" "$NNPAR" train ok.toml --set strategy.serial.ranks=2
row "negative rank timeout" "$NNPAR" train ok.toml --set mpi.rank_timeout=-1
row "missing CONFIG" "$NNPAR" train

# --- data ------------------------------------------------------------------------------
mkdir -p data
for f in letters-train-images-idx3-ubyte.gz letters-train-labels-idx1-ubyte.gz letters-test-images-idx3-ubyte.gz letters-test-labels-idx1-ubyte.gz; do
  cp "$DATA/$f" data/
done
ok_config data.toml
sed -i "s|^dir = \"$DATA\"|dir = \"data\"|" data.toml
row "missing data folder" "$NNPAR" train data.toml --set data.dir=nowhere
head -c 100000 "$DATA/letters-train-images-idx3-ubyte.gz" > data/letters-train-images-idx3-ubyte.gz
row "truncated gzip (cut-off download)" "$NNPAR" train data.toml
cp "$DATA/letters-train-labels-idx1-ubyte.gz" data/letters-train-images-idx3-ubyte.gz
row "labels file given as images" "$NNPAR" train data.toml
cp "$DATA/letters-train-images-idx3-ubyte.gz" data/
cp "$DATA/letters-test-labels-idx1-ubyte.gz" data/letters-train-labels-idx1-ubyte.gz
row "image/label count mismatch" "$NNPAR" train data.toml
cp "$DATA/letters-train-labels-idx1-ubyte.gz" data/
row "labels outside the classes" "$NNPAR" train data.toml --set data.label_offset=5
{ cat "$DATA/letters-train-labels-idx1-ubyte.gz"; printf 'garbage'; } > data/letters-train-labels-idx1-ubyte.gz
row "trailing garbage after gzip" "$NNPAR" train data.toml
cp "$DATA/letters-train-labels-idx1-ubyte.gz" data/
: > data/empty.idx
row "empty images file" "$NNPAR" train data.toml --set data.train_images=empty.idx
row "model input size vs images" "$NNPAR" train data.toml --set 'model.layers=[100,16,26]'
printf 'label,p1\n1,0,0\n' > data/bad.csv
row "CSV with too few values" "$NNPAR" train data.toml --set data.format=csv --set data.train_csv=bad.csv --set data.test_csv=bad.csv
printf '1%s\n' "$(printf ',%d' $(seq 1 783)),300" > data/pixel.csv
row "CSV pixel outside 0..255" "$NNPAR" train data.toml --set data.format=csv --set data.train_csv=pixel.csv --set data.test_csv=pixel.csv

# --- checkpoints ------------------------------------------------------------------------
echo "not a checkpoint" > text.safetensors
row "not a safetensors file" "$NNPAR" eval --checkpoint text.safetensors
printf '\xff\xff\xff\xff\x00\x00\x00\x00{}' > huge_header.safetensors
row "header length beyond the file" "$NNPAR" eval --checkpoint huge_header.safetensors
cp "$ROOT/tests/fuzz/regressions/fuzz_safetensors/number-overflow" overflow.safetensors
row "header number too large (fuzz find)" "$NNPAR" eval --checkpoint overflow.safetensors
"$NNPAR" train ok.toml -q --set output.write_results=false --save-checkpoint small.safetensors > /dev/null 2>&1
row "checkpoint of another model shape" "$NNPAR" eval ok.toml --checkpoint small.safetensors --set 'model.layers=[784,32,26]'
$python3 - <<'PY'
import json, struct
h = {}
blob = b""
for name, shape in [("layers.0.weight", [16, 784]), ("layers.0.bias", [16]), ("layers.1.weight", [26, 16]), ("layers.1.bias", [26])]:
    n = 1
    for d in shape: n *= d
    vals = [0.01] * n
    if name == "layers.1.bias": vals[3] = float("nan")
    data = struct.pack("<%df" % n, *vals)
    h[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
    blob += data
t = json.dumps(h).encode(); t += b" " * ((8 - len(t) % 8) % 8)
open("nan.safetensors", "wb").write(struct.pack("<Q", len(t)) + t + blob)
PY
row "NaN weights in a checkpoint" "$NNPAR" eval --checkpoint nan.safetensors
row "existing --save-checkpoint" "$NNPAR" train ok.toml --save-checkpoint small.safetensors

# --- runs, resume ------------------------------------------------------------------------
row "diverging training (lr 3e38)" "$NNPAR" train ok.toml --set train.lr=3e38
row "diverging training on 2 MPI ranks" "$NNPAR" train ok.toml --strategy dp2 --set train.lr=3e38
row "checkpoints with momentum" "$NNPAR" train ok.toml --checkpoint-every 1 --set train.momentum=0.9
row "--checkpoint-dir without --checkpoint-every" "$NNPAR" train ok.toml --checkpoint-dir run
row "--resume of a missing folder" "$NNPAR" train --resume nowhere
"$NNPAR" train ok.toml -q --set output.write_results=false --checkpoint-every 1 --checkpoint-dir run > /dev/null 2>&1
row "--resume of a finished run" "$NNPAR" train --resume run
row "--resume with a CONFIG too" "$NNPAR" train ok.toml --resume run
row "--checkpoint-dir that holds a run" "$NNPAR" train ok.toml --checkpoint-every 1 --checkpoint-dir run
echo '{"format": "nnpar-run-checkpoint", "version": 1, "epochs_done": 2' > run/state.json
row "--resume with a corrupt state.json" "$NNPAR" train --resume run
mkdir -p empty_run
row "--resume of a run killed before its first checkpoint" "$NNPAR" train --resume empty_run

# --- machines ------------------------------------------------------------------------------
if unshare -rm true 2> /dev/null; then
  # in-full-disk: runs a command with ./full a 4 KiB tmpfs filled to the last byte (private
  # mount namespace; no root needed where user namespaces are allowed).
  mkdir -p full
  cat > in-full-disk <<'SH'
#!/bin/sh
exec unshare -rm sh -c 'mount -t tmpfs -o size=4k tmpfs full && cat /dev/zero > full/.fill 2>/dev/null; exec "$0" "$@"' "$@"
SH
  chmod +x in-full-disk
  row "full disk: results" ./in-full-disk "$NNPAR" train ok.toml --set output.dir=full -q
  row "full disk: checkpoint" ./in-full-disk "$NNPAR" train ok.toml --set output.write_results=false --save-checkpoint full/w.safetensors -q
  row "full disk: run folder" ./in-full-disk "$NNPAR" train ok.toml --set output.write_results=false --checkpoint-every 1 --checkpoint-dir full/run -q
fi
row "rank killed mid-epoch (SIGKILL)" env NNPAR_FAULT_RANK_SIGNAL=1:KILL:1.5 "$NNPAR" train ok.toml --strategy dp2 --set train.epochs=300 -q
row "rank stopped mid-epoch (SIGSTOP)" env NNPAR_FAULT_RANK_SIGNAL=1:STOP:1.5 "$NNPAR" train ok.toml --strategy dp2 --set train.epochs=300 --set mpi.rank_timeout=3 -q
row "unreachable MPI host" "$NNPAR" train ok.toml --strategy dp2 --set 'mpi.launcher_args=["--host","no-such-host.invalid:1,localhost:1"]' -q
row "GPU strategy, no GPU" "$NNPAR" train ok.toml --plugin-path "$BUILD/test-plugins" --strategy gpu_only
