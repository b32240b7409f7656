# issue 5: push_p2p (new default) vs fused_p2p (pull), same call; tests first
source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 240 mpirun -np 2 ./bin/test_nccl_data > $L/test_nccl_data.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data.txt)
tail -5 $L/test_nccl_data.txt; grep -E "push_p2p|FAILED|PASSED" $L/test_nccl_data.txt | head -20
V='pull:reduce="fused_p2p"'
for rep in 1 2; do
timeout 170 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024,128 --periods 64 --epochs 6 --sync-variants "$V" --out /tmp/push$rep --json $L/push-rep$rep.json > $L/push-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/push-rep$rep.txt
grep -E "^\| (cuda|sync|local)|rc " $L/push-rep$rep.txt
done
tar czf $OUT/callH.tgz -C /tmp logs
