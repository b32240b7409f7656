# issue 11: nccl-tensor and the GPU pipeline stage on the multi-block softmax: test_nccl_pipeline (2 ranks), calibrate on 2 GPUs, the GPU grid (whole set), predicted beside measured
N=b52 DATA=datag source .device/common.sh
T0=$(date +%s)
(cd $D/bin && timeout 200 mpirun --oversubscribe -np 2 -x NCCL_NVLS_ENABLE=0 -x CUDA_MODULE_LOADING=EAGER -x NNPAR_COMM_TIMEOUT=60 -x LD_LIBRARY_PATH -x NNPAR_TEST_DATA -x NNPAR_PLUGIN_PATH ./test_nccl_pipeline 2>&1 | tail -40) > $L/test-nccl-pipeline.txt 2>&1; echo "test_nccl_pipeline rc $? at $(( $(date +%s) - T0 )) s"; grep -E "PASSED|FAILED|SKIPPED|OK \]" $L/test-nccl-pipeline.txt | head -12
(cd $W/build && timeout 150 ./bin/nnpar calibrate --gpu --no-mpi --gpu-ranks 2 -o $L/x2.json) > $L/calibrate.log 2>&1; echo "calibrate rc $? at $(( $(date +%s) - T0 )) s"
python3 -c "import json; j=json.load(open('$L/x2.json'))['gpu']; print(json.dumps(j.get('coresidence')))"
timeout 200 python3 $D/src/bench/gpu_grid.py --build $D --gpus 2 --batch 128,1024 --models small,deep --out /tmp/grid > $L/gpu-grid.md 2>&1; echo "grid rc $? at $(( $(date +%s) - T0 )) s"
$D/bin/nnpar plan --profile $L/x2.json --compare-results /tmp/grid > $L/plan-compare.md 2>&1; echo "plan rc $?"
python3 -c "import json; j=json.load(open('$L/x2.json')); del j['gpu']['coresidence']; json.dump(j,open('$L/x2-shares.json','w'),indent=1)"
$D/bin/nnpar plan --profile $L/x2-shares.json --compare-results /tmp/grid > $L/plan-compare-shares.md 2>&1
tar czf $L/grid.tgz -C /tmp grid
tar czf $OUT/callP3.tgz -C /tmp logs
grep -E "tensor|pipeline|^\| form" $L/gpu-grid.md | head -20
tail -24 $L/plan-compare.md; tail -1 $L/plan-compare-shares.md
