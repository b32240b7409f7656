# issue 11: calibrate with the coresidence probe on 2 GPUs, run the GPU grid, predicted beside measured (block model and shares model)
N=b50 DATA=datag source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 150 ./bin/nnpar calibrate --gpu --no-mpi --gpu-ranks 2 -o $L/x2.json) > $L/calibrate.log 2>&1; echo "calibrate rc $? at $(( $(date +%s) - T0 )) s"
tail -3 $L/calibrate.log
python3 -c "import json; j=json.load(open('$L/x2.json')); print(json.dumps(j['gpu'].get('coresidence')))"
timeout 240 python3 $D/src/bench/gpu_grid.py --build $D --gpus 2 --batch 128,1024 --models small,deep --out /tmp/grid > $L/gpu-grid.md 2>&1; echo "grid rc $? at $(( $(date +%s) - T0 )) s"
$D/bin/nnpar plan --profile $L/x2.json --compare-results /tmp/grid > $L/plan-compare.md 2>&1; echo "plan rc $?"
$D/bin/nnpar plan --profile $L/x2.json --compare-results /tmp/grid --json > $L/plan-compare.json 2>&1
python3 -c "import json; j=json.load(open('$L/x2.json')); del j['gpu']['coresidence']; json.dump(j,open('$L/x2-shares.json','w'),indent=1)"
$D/bin/nnpar plan --profile $L/x2-shares.json --compare-results /tmp/grid > $L/plan-compare-shares.md 2>&1
# in-graph kernel times of the small model at the grid's cuda batches
printf '[model]\nlayers = [784, 256, 256, 26]\n[train]\nepochs = 1\n[data]\nlimit = 20000\n[[strategy]]\nname = "cuda"\n' > /tmp/kt.toml
for B in 256 2048; do timeout 60 $D/bin/nnpar train /tmp/kt.toml --quiet --strategy cuda --set train.batch_size=$B --set strategy.cuda.kernel_timing=true > $L/kernel-timing-$B.txt 2>&1; echo "kt $B rc $?"; done
tar czf $L/grid.tgz -C /tmp grid
tar czf $OUT/callP1.tgz -C /tmp logs
tail -30 $L/plan-compare.md; tail -2 $L/plan-compare-shares.md; cat $L/kernel-timing-*.txt | tail -40
