# PinnedOrders (one helper for cuda's and nccl-data's pinned order buffers): the GPU tests
N=b13 source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 120 ./bin/test_cuda > $L/test_cuda.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_cuda.txt)
grep -E "tests ran|PASSED|FAILED|rc " $L/test_cuda.txt | tail -4
(cd $W/build && timeout 120 mpirun -np 2 ./bin/test_nccl_data > $L/test_nccl_data.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data.txt)
grep -E "tests ran|PASSED|FAILED|rc " $L/test_nccl_data.txt | tail -4
timeout 60 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024 --periods 64 --epochs 6 --out /tmp/v --json $L/v.json > $L/v.txt 2>&1; echo "bench rc $?"
grep -E "^\| (cuda|sync|local)" $L/v.txt | grep -v "sync-no"
tar czf $OUT/callV.tgz -C /tmp logs
