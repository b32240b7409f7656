# issue 5: stage_input on (default) vs off, same call, two repetitions
source .device/common.sh
T0=$(date +%s)
V='gathered:stage_input=false;gathered:mode="local_sgd",period=64,stage_input=false'
for rep in 1 2; do
timeout 200 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024,128 --periods 64 --epochs 4 --sync-variants "$V" --out /tmp/si$rep --json $L/stage-rep$rep.json > $L/stage-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/stage-rep$rep.txt
done
tar czf $OUT/callF.tgz -C /tmp logs
grep -E "^\| (cuda|sync|local)|rc " $L/stage-rep1.txt $L/stage-rep2.txt
