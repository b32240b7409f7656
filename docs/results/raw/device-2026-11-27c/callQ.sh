# issue 5 follow-up: push_p2p (the new default) on 4 GPUs: correctness at 4 ranks (3 copies per
# product), then push vs pull
N=b9 source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 240 mpirun -np 4 ./bin/test_nccl_data  > $L/test_nccl_data_np4.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data_np4.txt)
grep -E "tests ran|PASSED|FAILED|max abs|rc " $L/test_nccl_data_np4.txt | tail -12
V='pull:reduce="fused_p2p"'
for rep in 1 2; do
 B=1024; [ $rep = 2 ] && B=1024,128
 timeout 150 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 4 --batch $B --periods 64 --epochs 6 --sync-variants "$V" --out /tmp/q$rep --json $L/q-rep$rep.json > $L/q-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/q-rep$rep.txt
 echo "== rep $rep"; grep -E "^\| (cuda|sync|local)|rc " $L/q-rep$rep.txt | grep -v "sync-no"
done
tar czf $OUT/callQ.tgz -C /tmp logs
