set -u
R=$PWD; (cd .device && tar xJf m5.tar.xz)
D=$R/.device/m5
W=/work/main; mkdir -p $W; [ "$R" = "$W" ] || { rm -rf $W/build; ln -sfn $D $W/build; }
[ "$R" = "$W" ] && { rm -rf build; ln -sfn $D build; }
export LD_LIBRARY_PATH=$D/lib NNPAR_DATA=$R/.device/data NNPAR_TEST_DATA=$R/.device/data NNPAR_PLUGIN_PATH=$D/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0 NNPAR_COMM_TIMEOUT=20
{ date -u; nvidia-smi -L; } > $OUT/machine.txt 2>&1
T0=$(date +%s)
timeout 95 python3 $D/src/bench/data_parallel_gpu.py --build $W/build --gpus 2 --batch 1024,128 --periods 64 --epochs 4 --sync-variants 'unfused:fuse_logits="off"' --out /tmp/dpf --json $OUT/dp-full.json > $OUT/dp-full.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $OUT/dp-full.txt
