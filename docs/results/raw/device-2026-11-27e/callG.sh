# issue 4: batch <= 8 weight gradients back to fp32 under tf32; tests; batch 1/8/128 variants
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 100 ./test_cuda --gtest_filter='*Tf32*:CudaKernels.*:*BatchOne*' > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
V=graph,graph:precision=tf32
timeout 100 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --timeout 20 --widths 256,1024 --batches 1,8,128 --variants $V --json $L/small.json > $L/small.md 2>&1; echo "small rc $? at $(( $(date +%s) - T0 )) s"
tar czf $OUT/callG.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|tf32 graph" $L/test_cuda.txt | tail -8; grep "^|" $L/small.md
