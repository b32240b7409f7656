# issue 11 (+4): all of test_cuda on the final kernels; calibrate (coresidence, copy_columns) on 2 GPUs, the GPU grid (40k samples), predicted beside measured
N=b51 DATA=data40k source .device/common.sh
T0=$(date +%s)
(cd $D/bin && timeout 200 ./test_cuda 2>&1 | tail -60) > $L/test-cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"; grep -E "PASSED|FAILED|SKIPPED" $L/test-cuda.txt | head -8
(cd $W/build && timeout 150 ./bin/nnpar calibrate --gpu --no-mpi --gpu-ranks 2 -o $L/x2.json) > $L/calibrate.log 2>&1; echo "calibrate rc $? at $(( $(date +%s) - T0 )) s"
tail -2 $L/calibrate.log
python3 -c "
import json; j=json.load(open('$L/x2.json'))['gpu']; print(json.dumps(j.get('coresidence')))
for p in j.get('copy_columns',[]): print('copy_columns', p['rows'], p['width'], '%.2f us'%(p['seconds']*1e6))
for p in j['streams']['copy']: print('copy', p['elements'], '%.2f us'%(p['seconds']*1e6))"
timeout 200 python3 $D/src/bench/gpu_grid.py --build $D --gpus 2 --batch 128,1024 --models small,deep --out /tmp/grid > $L/gpu-grid.md 2>&1; echo "grid rc $? at $(( $(date +%s) - T0 )) s"
$D/bin/nnpar plan --profile $L/x2.json --compare-results /tmp/grid > $L/plan-compare.md 2>&1; echo "plan rc $?"
python3 -c "import json; j=json.load(open('$L/x2.json')); del j['gpu']['coresidence']; json.dump(j,open('$L/x2-shares.json','w'),indent=1)"
$D/bin/nnpar plan --profile $L/x2-shares.json --compare-results /tmp/grid > $L/plan-compare-shares.md 2>&1
tar czf $L/grid.tgz -C /tmp grid
tar czf $OUT/callP2.tgz -C /tmp logs
tail -24 $L/plan-compare.md; tail -1 $L/plan-compare-shares.md
