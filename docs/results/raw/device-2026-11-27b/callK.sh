# issue 5: final code (b4): tests, then the bench twice
N=b4 source .device/common.sh
T0=$(date +%s)
(cd $W/build && NNPAR_COMM_TIMEOUT=30 timeout 240 mpirun -np 2 ./bin/test_nccl_data > $L/test_nccl_data.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data.txt)
grep -E "tests ran|PASSED|FAILED|rc " $L/test_nccl_data.txt | tail -12
(cd $W/build && timeout 200 ./bin/test_cuda > $L/test_cuda.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_cuda.txt)
grep -E "tests ran|PASSED|FAILED|rc " $L/test_cuda.txt | tail -4
for rep in 1 2; do
 timeout 170 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024,128 --periods 64 --epochs 6 --out /tmp/x$rep --json $L/x-rep$rep.json > $L/x-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/x-rep$rep.txt
 echo "== rep $rep"; grep -E "^\| (cuda|sync|local)|rc " $L/x-rep$rep.txt
done
timeout 100 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024 --periods 64 --epochs 6 --out /tmp/x3 --json $L/x-rep3.json > $L/x-rep3.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/x-rep3.txt
echo "== rep 3"; grep -E "^\| (cuda|sync|local)|rc " $L/x-rep3.txt
tar czf $OUT/callK.tgz -C /tmp logs
