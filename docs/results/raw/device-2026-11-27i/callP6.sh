# issue 11: the block model on 4 GPUs: calibrate at 2 and 4 ranks, the GPU grid on 4 GPUs (whole set), predicted beside measured
N=b54 DATA=datag source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 200 ./bin/nnpar calibrate --gpu --no-mpi --gpu-ranks 2,4 -o $L/x4.json) > $L/calibrate.log 2>&1; echo "calibrate rc $? at $(( $(date +%s) - T0 )) s"
python3 -c "import json; j=json.load(open('$L/x4.json'))['gpu']; print(json.dumps(j.get('coresidence'))[:300])"
timeout 240 python3 $D/src/bench/gpu_grid.py --build $D --gpus 4 --batch 128,1024 --models small,deep --out /tmp/grid > $L/gpu-grid.md 2>&1; echo "grid rc $? at $(( $(date +%s) - T0 )) s"
$D/bin/nnpar plan --profile $L/x4.json --compare-results /tmp/grid > $L/plan-compare.md 2>&1; echo "plan rc $?"
python3 -c "import json; j=json.load(open('$L/x4.json')); del j['gpu']['coresidence']; json.dump(j,open('$L/x4-shares.json','w'),indent=1)"
$D/bin/nnpar plan --profile $L/x4-shares.json --compare-results /tmp/grid > $L/plan-compare-shares.md 2>&1
tar czf $L/grid.tgz -C /tmp grid
tar czf $OUT/callP6.tgz -C /tmp logs
tail -26 $L/plan-compare.md; tail -1 $L/plan-compare-shares.md
