#!/usr/bin/env bash
# Device run 3 of the s4-nccl session (issue 5): the session-3 nccl-data plugin (built at
# 8fc6062) and this branch's, each through bench/data_parallel_gpu.py at 1024 per GPU, in one call.
set -u
D=$PWD/.device/nccl
W=/work/nnpar-nccl; mkdir -p $(dirname $W) $W && rm -rf $W/build && ln -sfn $D $W/build
export LD_LIBRARY_PATH=$D/lib NNPAR_DATA=$PWD/.device/data NNPAR_TEST_DATA=$PWD/.device/data NNPAR_PLUGIN_PATH=$D/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0 NNPAR_COMM_TIMEOUT=30
{ date -u; nvidia-smi -L; } > $OUT/machine.txt 2>&1
for which in old new; do
  b=$W/build; [ $which = old ] && b=$D/old
  { date -u; echo "[$which] python3 bench/data_parallel_gpu.py --build $b --gpus 2 --batch 1024 --periods 64 --epochs 8"
    timeout 24 python3 $D/src/bench/data_parallel_gpu.py --build $b --gpus 2 --batch 1024 --periods 64 --epochs 8 \
      --out /tmp/dp-$which; echo "rc $?"; } > $OUT/dp-$which.txt 2>&1
done
tar czf $OUT/dp3-results.tgz -C /tmp dp-old dp-new 2>/dev/null
