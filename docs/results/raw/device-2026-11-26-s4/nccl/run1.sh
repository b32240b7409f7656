#!/usr/bin/env bash
# Device run 1 of the s4-nccl session (issue 5), as run (bundle at commit 25a39b8): allreduce
# alone (plain vs symmetric window), test_nccl_data on 2 GPUs, and nccl-data sync variants vs
# cuda at 1024 and 128 per GPU.
set -u
W=/work/nnpar-nccl; mkdir -p $(dirname $W) $W && rm -rf $W/build && ln -sfn $PWD/.device/nccl $W/build
export LD_LIBRARY_PATH=$PWD/.device/nccl/lib NNPAR_DATA=$PWD/.device/data NNPAR_TEST_DATA=$PWD/.device/data NNPAR_PLUGIN_PATH=$PWD/.device/nccl/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0 NNPAR_COMM_TIMEOUT=30
S=$PWD/.device/nccl/src
{ date -u; nvidia-smi; nvidia-smi topo -m; lscpu | head -20; } > $OUT/machine.txt 2>&1
{ date -u; echo "== plain"; timeout 20 mpirun -np 2 $W/build/bin/bench_allreduce nccl; echo "rc $?"
  echo "== symmetric window"; timeout 20 mpirun -np 2 $W/build/bin/bench_allreduce nccl-sym; echo "rc $?"; } > $OUT/allreduce.txt 2>&1
{ date -u; cd $W/build && timeout 60 mpirun -np 2 ./bin/test_nccl_data; echo "rc $?"; } > $OUT/test_nccl_data.txt 2>&1
V="old:symmetric=false,layer0_chunks=1,bucket_update=false;noov-old:overlap=false,symmetric=false"
V="$V;sym:bucket_update=false;bu:symmetric=false;c2:layer0_chunks=2;c4:layer0_chunks=4;c2-plain:symmetric=false,layer0_chunks=2"
{ date -u; echo "python3 bench/data_parallel_gpu.py --build build --gpus 2 --batch 1024,128 --periods 4,64 --epochs 5 --sync-variants \"$V\""
  timeout 140 python3 $S/bench/data_parallel_gpu.py --build $W/build --gpus 2 --batch 1024,128 --periods 4,64 --epochs 5 \
    --sync-variants "$V" --out /tmp/dp --json $OUT/dp.json; echo "rc $?"; } > $OUT/dp.txt 2>&1
tar czf $OUT/dp-results.tgz -C /tmp dp 2>/dev/null
