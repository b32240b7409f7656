# issue 5: time to accuracy at 128 rows per GPU, local SGD periods 8/16/64 vs one GPU
source .device/common.sh
T0=$(date +%s)
for rep in 1 2; do
timeout 200 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 128 --periods 8,16,64 --epochs 12 --target 0.75 --out /tmp/tta$rep --json $L/tta-rep$rep.json > $L/tta-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/tta-rep$rep.txt
done
tar czf $OUT/callE.tgz -C /tmp logs
cat $L/tta-rep1.txt $L/tta-rep2.txt
