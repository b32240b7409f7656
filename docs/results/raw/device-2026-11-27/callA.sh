source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 120 mpirun -np 2 ./bin/test_nccl_data) > $L/test_nccl_data.txt 2>&1; echo "rc $?" >> $L/test_nccl_data.txt
$D/bin/test_data --gtest_filter='EpochOrder*' > $L/test_data.txt 2>&1; echo "rc $?" >> $L/test_data.txt
echo "tests done at $(( $(date +%s) - T0 )) s"
for rep in 1 2; do
  timeout 150 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024,128 --periods 64 --epochs 4 --out /tmp/dp$rep --json $L/dp-rep$rep.json > $L/dp-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/dp-rep$rep.txt
done
timeout 120 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024 --periods 64 --epochs 6 --limit 62400 --out /tmp/dph --json $L/dp-half.json > $L/dp-half.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/dp-half.txt
tar czf $OUT/callA.tgz -C /tmp logs
tail -40 $L/dp-rep1.txt; tail -5 $L/test_nccl_data.txt
