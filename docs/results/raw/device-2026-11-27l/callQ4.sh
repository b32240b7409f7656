# issue 3: the scaling sweep with the host's ceiling beside each speedup (openmp_scaling.py
# runs bench_cpu_clock before and after), twice, then the medians
source .device/common.sh
S=$D/src/bench/openmp_scaling.py
mkdir -p $L/rep; T0=$(date +%s)
for r in 1 2; do
  timeout 250 python3 $S --build $D --threads 1,2,4,8,16 --batch 128,1024 --width 256,1024 --samples 6144 --epochs 3 \
    --modes intra_op --json $L/rep/sweep-r$r.json > $L/rep/sweep-r$r.md 2>&1
  echo "sweep r$r rc $? at $(( $(date +%s) - T0 )) s"
done > $L/progress.txt 2>&1
tar czf $OUT/${CALL:-callQ4}.tgz -C /tmp logs
cat $L/progress.txt; cat $L/rep/sweep-r1.md; grep -A8 "batch 1024, model 784-1024\|batch 128, model 784-256\|host ceiling" $L/rep/sweep-r2.md
