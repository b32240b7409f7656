# Final call of session 4: OpenMP tile minimum (issue 3), GPU tests of the merged code,
# GPU hardening (issue 13), products beside a posted receive per size (issue 11).
set -u
R=$PWD; B=$R/.device/fin4
cd .device && tar xJf fin4.tar.xz && cd $R
W=/work/main; mkdir -p $W
if [ "$R" = "$W" ]; then rm -rf build; ln -sfn $B build; else rm -rf $W/build; ln -sfn $B $W/build; fi
export LD_LIBRARY_PATH=$B/rt NNPAR_DATA=$R/.device/data-small NNPAR_TEST_DATA=$R/.device/data-small NNPAR_PLUGIN_PATH=$B/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
PY=python3; $PY -c "import numpy" 2>/dev/null || PY=/usr/bin/python3
{ date -u; nvidia-smi; lscpu | head -20; } > $OUT/env.txt 2>&1
T0=$(date +%s); at() { echo "== $1 at $(( $(date +%s) - T0 )) s"; }
# 1. OpenMP intra_op: the final default (dynamic, min_tile_mflop 16) vs the two measured schedules, CPU quiet
{ for opt in "" "--omp-option schedule=static"; do
    at "openmp $opt"
    timeout 35 $PY $B/src/bench/openmp_scaling.py --build $W/build --threads 8,16 --batch 1024,128 --width 1024,256 --samples 6144 --epochs 3 --modes intra_op --no-torch $opt 2>&1
  done; } > $OUT/openmp.txt 2>&1
# 2. products beside a posted receive, per size, on 2 GPUs (+ the other NCCL terms)
{ at nccl; timeout 75 mpirun -np 2 --oversubscribe $W/build/bin/nnpar-calibrate-gpu nccl --out $OUT/nccl-2.json; echo "rc $?"; } > $OUT/nccl-calibrate.log 2>&1
# 3. GPU tests of the merged code
{ at tests; cd $W/build && timeout 90 ./bin/test_cuda --gtest_brief=1; echo "test_cuda rc $?"
  timeout 60 mpirun -np 2 ./bin/test_nccl_data --gtest_brief=1; echo "test_nccl_data rc $?"; cd $R; } > $OUT/tests.txt 2>&1
# 4. sanitizers at once (one GPU each, round robin), then the one fault not yet verified
{ at sanitize
  SANITIZE_TIMEOUT=140 SANITIZE_LOGS=/tmp/sanlogs NNPAR_BUILD=$W/build \
  SANITIZE_FILTER='CudaKernels.*:CudaTraining.GraphMatchesSerial:CudaTraining.PersistentDeepBatch7OddWidthsMatchesSerial' \
    timeout 170 bash $R/scripts/gpu_sanitize.sh sanitize; echo "rc $?"; at faults
  cat > /tmp/nccl.toml <<T
[data]
dir = "$NNPAR_DATA"
limit = 4000
test_limit = 1000
[model]
layers = [784, 64, 26]
[train]
epochs = 200
batch_size = 64
lr = 0.5
[output]
write_results = false
[[strategy]]
name = "nccl-data"
label = "nccl2"
ranks = 2
T
  s=$(date +%s); env NNPAR_FAULT_RANK_SIGNAL=1:STOP:3 NNPAR_COMM_TIMEOUT=10 timeout 60 $W/build/bin/nnpar train /tmp/nccl.toml --strategy nccl2 --set mpi.rank_timeout=0 -q; echo "stopped rank, watchdog off: rc $? after $(( $(date +%s) - s )) s"
  at done; } > $OUT/gpu_sanitize.txt 2>&1
(cd /tmp && tar czf $OUT/sanlogs.tgz sanlogs 2>/dev/null)
