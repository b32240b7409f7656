# issue 5: early_reduce (layers > 0 reduced on the side stream during layer 0's weight gradient) vs one reduce kernel, same build
N=b5 source .device/common.sh
T0=$(date +%s)
(cd $W/build && NNPAR_COMM_TIMEOUT=30 timeout 240 mpirun -np 2 ./bin/test_nccl_data > $L/test_nccl_data.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data.txt)
grep -E "early_reduce|tests ran|PASSED|FAILED|rc " $L/test_nccl_data.txt | tail -8
for rep in 1 2; do
 timeout 150 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024,128 --periods 64 --epochs 6 --sync-variants 'whole:early_reduce=false' --out /tmp/x$rep --json $L/x-rep$rep.json > $L/x-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/x-rep$rep.txt
 echo "== rep $rep"; grep -E "^\| (cuda|sync|local)|rc " $L/x-rep$rep.txt
done
tar czf $OUT/callL.tgz -C /tmp logs
