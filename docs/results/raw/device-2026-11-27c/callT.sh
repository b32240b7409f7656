# issue 11: calibrate (peer_sgd_push included) on 2 GPUs, run the GPU grid on 2 GPUs, predicted beside measured
N=b11 source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 150 ./bin/nnpar calibrate --gpu --no-mpi --gpu-ranks 2 -o $L/x2.json) > $L/calibrate.log 2>&1; echo "calibrate rc $? at $(( $(date +%s) - T0 )) s"
timeout 240 python3 $D/src/bench/gpu_grid.py --build $D --gpus 2 --batch 128,1024 --models small,deep --out /tmp/grid > $L/gpu-grid.md 2>&1; echo "grid rc $? at $(( $(date +%s) - T0 )) s"
$D/bin/nnpar plan --profile $L/x2.json --compare-results /tmp/grid > $L/plan-compare.md 2>&1; echo "plan rc $?"
$D/bin/nnpar plan --profile $L/x2.json --compare-results /tmp/grid --json > $L/plan-compare.json 2>&1
tar czf $L/grid.tgz -C /tmp grid
tar czf $OUT/callT.tgz -C /tmp logs
tail -40 $L/plan-compare.md
