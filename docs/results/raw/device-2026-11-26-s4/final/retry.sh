set -u
R=$PWD; B=$R/.device/fin4
cd .device && tar xJf fin4.tar.xz && cd $R
W=/work/main; mkdir -p $W
if [ "$R" = "$W" ]; then rm -rf build; ln -sfn $B build; else rm -rf $W/build; ln -sfn $B $W/build; fi
export LD_LIBRARY_PATH=$B/rt NNPAR_DATA=$R/.device/data-small NNPAR_TEST_DATA=$R/.device/data-small NNPAR_PLUGIN_PATH=$B/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
PY=python3; $PY -c "import numpy" 2>/dev/null || PY=/usr/bin/python3
{ date -u; lscpu | head -20; } > $OUT/env.txt 2>&1
T0=$(date +%s); at() { echo "== $1 at $(( $(date +%s) - T0 )) s"; }
cat > /tmp/nccl.toml <<T
[data]
dir = "$NNPAR_DATA"
limit = 4000
test_limit = 1000
[model]
layers = [784, 64, 26]
[train]
epochs = 20000
batch_size = 64
lr = 0.5
[output]
write_results = false
[[strategy]]
name = "nccl-data"
label = "nccl2"
ranks = 2
T
# the fault runs in the background while the CPU benchmark waits for it to end (GPU-only work, 2 processes)
{ s=$(date +%s); env NNPAR_FAULT_RANK_SIGNAL=1:STOP:3 NNPAR_COMM_TIMEOUT=10 timeout 45 $W/build/bin/nnpar train /tmp/nccl.toml --strategy nccl2 --set mpi.rank_timeout=0 -q; echo "stopped rank, watchdog off: rc $? after $(( $(date +%s) - s )) s"; } > $OUT/fault.txt 2>&1
{ for opt in "" "--omp-option schedule=static"; do
    at "openmp $opt"
    timeout 40 $PY $B/src/bench/openmp_scaling.py --build $W/build --threads 8,16 --batch 1024,128 --width 1024,256 --samples 6144 --epochs 3 --modes intra_op --no-torch $opt 2>&1
  done; at done; } > $OUT/openmp.txt 2>&1
