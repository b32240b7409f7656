# issue 5: push_p2p as a tile exchange in the weight-gradient epilogue (b3) vs fused_p2p (pull), same build
N=b3 source .device/common.sh
T0=$(date +%s)
(cd $W/build && NNPAR_COMM_TIMEOUT=30 timeout 240 mpirun -np 2 ./bin/test_nccl_data > $L/test_nccl_data.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data.txt)
grep -E "push_p2p|tests ran|PASSED|FAILED|rc " $L/test_nccl_data.txt | tail -12
for rep in 1 2; do
 timeout 170 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024,128 --periods 64 --epochs 6 --sync-variants 'pull:reduce="fused_p2p"' --out /tmp/x$rep --json $L/x-rep$rep.json > $L/x-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/x-rep$rep.txt
 echo "== rep $rep"; grep -E "^\| (cuda|sync|local)|rc " $L/x-rep$rep.txt
done
tar czf $OUT/callJ.tgz -C /tmp logs
