#!/usr/bin/env bash
# GPU hardening checks, for a machine with NVIDIA GPUs and the CUDA toolkit (compute-sanitizer
# on PATH or in $CUDA_HOME/bin). Not run by CI: there is no GPU there.
#
#   scripts/gpu_sanitize.sh            all of it, on a build in $NNPAR_BUILD (default build/)
#   scripts/gpu_sanitize.sh sanitize   compute-sanitizer memcheck/racecheck/synccheck/initcheck
#   scripts/gpu_sanitize.sh faults     GPU resource errors and a lost NCCL rank
# Environment: SANITIZE_TOOLS (default "memcheck racecheck synccheck initcheck"),
# SANITIZE_TIMEOUT (s per sanitizer run, default 240), RACECHECK_FILTER (gtest filter),
# SANITIZE_LOGS (a folder to keep every sanitizer log in), SANITIZE_FILTER (gtest filter for
# the other tools' test_cuda runs; default all tests).
#
# Each check prints PASS or FAIL with what it expected; the exit status is the number of
# FAILs. Results go into docs/reliability.md ("GPU checks").
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${NNPAR_BUILD:-$ROOT/build}
BIN=$BUILD/bin
NNPAR=$BIN/nnpar
DATA=${NNPAR_DATA:-$ROOT/../shared/data}
export NNPAR_TEST_DATA=${NNPAR_TEST_DATA:-$DATA}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
CS=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fails=0
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)

report() {  # report NAME STATUS(0=pass) DETAIL
  if [ "$2" -eq 0 ]; then echo "PASS  $1"; else echo "FAIL  $1: $3"; fails=$((fails + 1)); fi
}

# A small run on the letters data, one GPU strategy per entry.
cat > "$WORK/gpu.toml" <<TOML
[data]
dir = "$DATA"
limit = 4000
test_limit = 1000
[model]
layers = [784, 64, 26]
[train]
epochs = 2
batch_size = 64
lr = 0.5
[output]
write_results = false
[[strategy]]
name = "cuda"
[[strategy]]
name = "nccl-data"
label = "nccl2"
ranks = 2
TOML

# run_checked LOG COMMAND...: the command under its time limit, output in LOG, its exit status
# in LOG.status (a run that hits the limit gets a note in LOG and counts as a FAIL).
run_checked() {
  local log=$1
  shift
  timeout "${SANITIZE_TIMEOUT:-240}" "$@" > "$log" 2>&1
  local status=$?
  [ $status -eq 124 ] && echo "timed out after ${SANITIZE_TIMEOUT:-240}s" >> "$log"
  echo "$status" > "$log.status"
}

sanitize() {
  [ -x "$CS" ] || { report "compute-sanitizer found" 1 "not at $CS (set COMPUTE_SANITIZER)"; return; }
  # One GPU test binary under every tool. racecheck instruments every shared-memory access and
  # runs the training tests for hours, so it covers the kernel tests ($RACECHECK_FILTER; even
  # those with the two training tests did not finish in 120 s on an H100); each tool run has its own time
  # limit ($SANITIZE_TIMEOUT s), and a run that hits it is a FAIL, not a pass.
  # The runs are independent, so on a host with several GPUs they run at once, one GPU each
  # (round robin; the NCCL run gets two): the wall time is the slowest run, not the sum.
  local race_filter=${RACECHECK_FILTER:-'CudaKernels.*'}
  local names=() logs=() slot=0
  start_run() {  # start_run DEVICES NAME LOG COMMAND...: in the background; DEVICES "" = the next GPU
    local devices=${1:-$((slot++ % (GPUS > 0 ? GPUS : 1)))}
    names+=("$2"); logs+=("$3")
    shift 2
    CUDA_VISIBLE_DEVICES=$devices run_checked "$@" &
  }
  for tool in ${SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
    extra=()
    [ "$tool" = memcheck ] && extra=(--leak-check full)
    filter=()
    [ -n "${SANITIZE_FILTER:-}" ] && filter=(--gtest_filter="$SANITIZE_FILTER")
    [ "$tool" = racecheck ] && filter=(--gtest_filter="$race_filter")
    start_run "" "test_cuda under compute-sanitizer --tool $tool${filter:+ (${filter[*]})}" "$WORK/test_cuda-$tool.log" \
      "$CS" --tool "$tool" "${extra[@]}" --error-exitcode 99 "$BIN/test_cuda" --gtest_brief=1 "${filter[@]}"
  done
  # The strategies end to end through nnpar (the cuda plugin's CUDA graphs included).
  for tool in memcheck racecheck; do
    start_run "" "nnpar train --strategy cuda under $tool" "$WORK/cuda-$tool.log" \
      "$CS" --tool "$tool" --error-exitcode 99 "$NNPAR" train "$WORK/gpu.toml" --strategy cuda -q
  done
  # NCCL: every rank under memcheck (NCCL's own kernels included; racecheck is not
  # meaningful across processes). API errors are not reported: NCCL's initialisation probes
  # its kernels with cudaFuncGetAttributes and gets (and handles) 12
  # cudaErrorNoKernelImageForDevice per rank, which memcheck would count as errors.
  if [ -x "$BIN/test_nccl_data" ] && [ "$GPUS" -ge 2 ]; then
    start_run "$((GPUS - 2)),$((GPUS - 1))" "test_nccl_data (2 ranks) under memcheck" "$WORK/nccl-memcheck.log" \
      mpirun --oversubscribe -np 2 "$CS" --tool memcheck --report-api-errors no --error-exitcode 99 "$BIN/test_nccl_data"
  fi
  wait
  local i
  for i in "${!names[@]}"; do
    report "${names[$i]}" "$(cat "${logs[$i]}.status")" "$(tail -n 20 "${logs[$i]}")"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|tests? (ran|passed)|PASSED|FAILED|timed out" "${logs[$i]}" | tail -n 3 | sed 's/^/      /'
  done
  [ -n "${SANITIZE_LOGS:-}" ] && mkdir -p "$SANITIZE_LOGS" && cp "$WORK"/*.log "$SANITIZE_LOGS"/ 2>/dev/null
  return 0
}

expect_failure() {  # expect_failure NAME PATTERN COMMAND...: exit status 2 and PATTERN in the output, within 120 s
  local name=$1 pattern=$2
  shift 2
  local start=$SECONDS
  timeout 120 "$@" > "$WORK/out.log" 2>&1
  local status=$?
  local took=$((SECONDS - start))
  if [ "$status" -eq 124 ]; then report "$name" 1 "hung (killed after 120 s)"; return; fi
  if [ "$status" -ne 2 ] || ! grep -qE "$pattern" "$WORK/out.log"; then
    report "$name" 1 "status $status after ${took}s, expected 2 and /$pattern/: $(tail -n 15 "$WORK/out.log")"
    return
  fi
  report "$name (${took}s): $(grep -m1 -E "$pattern" "$WORK/out.log" | cut -c1-160)" 0 ""
}

faults() {
  # Out of GPU memory: another process (PyTorch, present on GPU machines) holds all but
  # ~64 MB of GPU 0, as a job sharing the GPU would; the 98 MB dataset upload cannot fit.
  # (Config limits keep a single nnpar model far below 80-141 GB, so nnpar cannot be made to
  # run out on its own.)
  if python3 -c 'import torch' 2>/dev/null; then
    CUDA_VISIBLE_DEVICES=0 python3 - "$WORK/hog.ready" <<'PY' &
import sys, time, torch
free, _ = torch.cuda.mem_get_info()
block = torch.empty(free - (64 << 20), dtype=torch.uint8, device="cuda")
open(sys.argv[1], "w").close()
time.sleep(120)
PY
    local hog=$!
    for _ in $(seq 60); do [ -f "$WORK/hog.ready" ] && break; sleep 0.5; done
    expect_failure "GPU out of memory (another process holds the GPU)" "out of memory" \
      env CUDA_VISIBLE_DEVICES=0 "$NNPAR" train "$WORK/gpu.toml" --strategy cuda --set data.limit=0 -q
    kill "$hog" 2>/dev/null; wait "$hog" 2>/dev/null
  else
    report "GPU out of memory" 1 "needs python3 with torch to hold the GPU's memory"
  fi
  # Fewer GPUs than ranks: one rank more than the host has.
  expect_failure "more ranks than GPUs" "GPU|gpu" \
    "$NNPAR" train "$WORK/gpu.toml" --strategy nccl2 --set "strategy.nccl2.ranks=$((GPUS + 1))" -q
  # Missing GPU: the devices hidden from the process.
  expect_failure "no visible GPU" "needs a CUDA GPU|no CUDA|GPU" \
    env CUDA_VISIBLE_DEVICES= "$NNPAR" train "$WORK/gpu.toml" --strategy cuda -q
  # A lost NCCL rank: rank 1 stops (SIGSTOP) mid-run. With the heartbeat watchdog off, the
  # NCCL communicator's own timeout must abort the communicator (ncclCommAbort) and end the job.
  expect_failure "stopped NCCL rank, NCCL timeout" "no progress for|NCCL" \
    env NNPAR_FAULT_RANK_SIGNAL=1:STOP:3 NNPAR_COMM_TIMEOUT=10 \
    "$NNPAR" train "$WORK/gpu.toml" --strategy nccl2 --set train.epochs=20000 --set mpi.rank_timeout=0 -q
  # The same with the heartbeat watchdog: it names the rank.
  expect_failure "stopped NCCL rank, heartbeat watchdog" "rank 1 is lost" \
    env NNPAR_FAULT_RANK_SIGNAL=1:STOP:3 \
    "$NNPAR" train "$WORK/gpu.toml" --strategy nccl2 --set train.epochs=20000 --set mpi.rank_timeout=5 -q
  # A killed NCCL rank: mpirun ends the job and names it.
  expect_failure "killed NCCL rank" "rank 1|signal 9" \
    env NNPAR_FAULT_RANK_SIGNAL=1:KILL:3 \
    "$NNPAR" train "$WORK/gpu.toml" --strategy nccl2 --set train.epochs=20000 -q
  # Divergence on the GPU path: the weights read back after epoch 1 are NaN.
  expect_failure "divergence on the GPU" "diverged in epoch 1" \
    "$NNPAR" train "$WORK/gpu.toml" --strategy cuda --set train.lr=3e38 -q
  # Kill and resume on the GPU: bit-identical final weights (cuda is deterministic).
  "$NNPAR" train "$WORK/gpu.toml" --strategy cuda -q --set train.epochs=4 --save-checkpoint "$WORK/whole.st" > /dev/null 2>&1
  NNPAR_FAULT_KILL_AFTER_CHECKPOINT=2 "$NNPAR" train "$WORK/gpu.toml" --strategy cuda -q --set train.epochs=4 \
    --checkpoint-every 1 --checkpoint-dir "$WORK/run" --save-checkpoint "$WORK/resumed.st" > /dev/null 2>&1
  "$NNPAR" train --resume "$WORK/run" -q > "$WORK/resume.log" 2>&1
  python3 - "$WORK/whole.st" "$WORK/resumed.st" <<'PY'
import json, struct, sys
def tensors(path):
    b = open(path, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); h.pop('__metadata__', None)
    return {k: b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]] for k, v in h.items()}
sys.exit(0 if tensors(sys.argv[1]) == tensors(sys.argv[2]) else 1)
PY
  report "cuda: kill after epoch 2 and resume gives bit-identical weights" $? "$(tail -n 10 "$WORK/resume.log")"
}

case "${1:-all}" in
  sanitize) sanitize ;;
  faults) faults ;;
  all) sanitize; faults ;;
  *) echo "usage: $0 [sanitize|faults|all]"; exit 2 ;;
esac
echo "$fails failure(s)"
exit "$fails"
