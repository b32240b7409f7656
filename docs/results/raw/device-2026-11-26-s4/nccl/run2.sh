#!/usr/bin/env bash
# Device run 2 of the s4-nccl session (issue 5): tests, then old (session-3 plugin, built at
# 8fc6062) vs new nccl-data against the same cuda baseline, and the allreduce alone.
set -u
W=/work/nnpar-nccl; mkdir -p $(dirname $W) $W && rm -rf $W/build && ln -sfn $PWD/.device/nccl $W/build
export LD_LIBRARY_PATH=$PWD/.device/nccl/lib NNPAR_DATA=$PWD/.device/data NNPAR_TEST_DATA=$PWD/.device/data NNPAR_PLUGIN_PATH=$PWD/.device/nccl/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0 NNPAR_COMM_TIMEOUT=30
S=$PWD/.device/nccl/src
{ date -u; nvidia-smi -L; nvidia-smi topo -m; lscpu | head -20; } > $OUT/machine.txt 2>&1
{ date -u; cd $W/build && timeout 35 mpirun -np 2 ./bin/test_nccl_data; echo "rc $?"; } > $OUT/test_nccl_data.txt 2>&1
{ date -u; echo "python3 bench/data_parallel_gpu.py --build build --gpus 2 --batch 1024,128 --periods 4,64 --epochs 8 --target 0.75 --sync-variants \"noov-sym:overlap=false,symmetric=true\""
  timeout 80 python3 $S/bench/data_parallel_gpu.py --build $W/build --gpus 2 --batch 1024,128 --periods 4,64 --epochs 8 --target 0.75 \
    --sync-variants "noov-sym:overlap=false,symmetric=true" --out /tmp/dpnew --json $OUT/dp-new.json; echo "rc $?"; } > $OUT/dp-new.txt 2>&1
{ date -u; echo "old plugin (8fc6062): python3 bench/data_parallel_gpu.py --build old --gpus 2 --batch 1024,128 --periods 64 --epochs 8 --target 0.75"
  timeout 55 python3 $S/bench/data_parallel_gpu.py --build $PWD/.device/nccl/old --gpus 2 --batch 1024,128 --periods 64 --epochs 8 --target 0.75 \
    --out /tmp/dpold --json $OUT/dp-old.json; echo "rc $?"; } > $OUT/dp-old.txt 2>&1
{ date -u; echo "== plain"; timeout 12 mpirun -np 2 $W/build/bin/bench_allreduce nccl; echo "rc $?"
  echo "== symmetric window (NCCL_DEBUG=INFO)"; NCCL_DEBUG=INFO timeout 12 mpirun -np 2 $W/build/bin/bench_allreduce nccl-sym; echo "rc $?"; } > $OUT/allreduce.txt 2>&1
