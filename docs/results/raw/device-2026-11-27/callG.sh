N=b2 source .device/common.sh
(cd $W/build && timeout 150 mpirun -np 2 ./bin/test_nccl_data) > $L/test_nccl_data.txt 2>&1; echo "rc $?" >> $L/test_nccl_data.txt
timeout 100 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024 --periods 64 --epochs 3 --sync-variants 'gathered:mode="local_sgd",period=64,stage_input=false' --out /tmp/g --json $L/dp.json > $L/dp.txt 2>&1; echo "rc $?" >> $L/dp.txt
tar czf $OUT/callG.tgz -C /tmp logs
grep -E "PASSED|FAILED|rc " $L/test_nccl_data.txt; cat $L/dp.txt
