set -u
R=$PWD; (cd .device && tar xJf m5.tar.xz)
D=$R/.device/m5
W=/work/main; mkdir -p $W; [ "$R" = "$W" ] || { rm -rf $W/build; ln -sfn $D $W/build; }
[ "$R" = "$W" ] && { rm -rf build; ln -sfn $D build; }
export LD_LIBRARY_PATH=$D/lib NNPAR_DATA=$R/.device/data-small NNPAR_TEST_DATA=$R/.device/data-small NNPAR_PLUGIN_PATH=$D/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0 NNPAR_COMM_TIMEOUT=20
{ date -u; nvidia-smi -L; } > $OUT/machine.txt 2>&1
T0=$(date +%s); at() { echo "== $1 at $(( $(date +%s) - T0 )) s ($(date -u +%H:%M:%S) UTC)"; }
{ at test_cuda; cd $W/build && timeout 100 ./bin/test_cuda --gtest_filter=-*Persistent* 2>&1 | grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |tests ran|FAILED" ; echo "rc ${PIPESTATUS[0]}"; cd $R; } > $OUT/test_cuda.txt 2>&1
{ at test_nccl_data; cd $W/build && timeout 100 mpirun -np 2 ./bin/test_nccl_data > $OUT/test_nccl_data-full.txt 2>&1; echo "rc $?"; cd $R; } > $OUT/test_nccl_data.txt 2>&1
{ at dp; timeout 90 python3 $D/src/bench/data_parallel_gpu.py --build $W/build --gpus 2 --batch 1024,128 --periods 64 --epochs 6 --sync-variants 'unfused:fuse_logits="off"' --out /tmp/dp --json $OUT/dp.json; echo "rc $?"; at done; } > $OUT/dp.txt 2>&1
