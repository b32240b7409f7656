# issue 5: final code (push_p2p default, one announcement per step): tests, then the bench three times
N=b9 source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 150 mpirun -np 2 ./bin/test_nccl_data > $L/test_nccl_data.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data.txt)
grep -E "tests ran|PASSED|FAILED|push_p2p|rc " $L/test_nccl_data.txt | tail -8
(cd $W/build && timeout 120 ./bin/test_cuda > $L/test_cuda.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_cuda.txt)
grep -E "tests ran|PASSED|FAILED|rc " $L/test_cuda.txt | tail -4
V='pull:reduce="fused_p2p"'
for rep in 1 2 3; do
 B=1024; [ $rep = 2 ] && B=1024,128
 timeout 150 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch $B --periods 64 --epochs 6 --sync-variants "$V" --out /tmp/p$rep --json $L/p-rep$rep.json > $L/p-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/p-rep$rep.txt
 echo "== rep $rep"; grep -E "^\| (cuda|sync|local)|rc " $L/p-rep$rep.txt | grep -v "sync-no"
done
tar czf $OUT/callP.tgz -C /tmp logs
