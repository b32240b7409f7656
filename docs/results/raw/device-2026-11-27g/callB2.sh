# issue 4: bf16 round 2 (conflict-free fragment loads): the tensor-core tests; nnpar bf16 vs tf32 vs PyTorch
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 120 ./test_cuda --gtest_filter='*Bf16*:*Tf32*:*Mma*' > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
for p in bf16 tf32; do
  timeout 120 python3 $D/src/bench/cuda_vs_torch.py --build $D --precision $p --batches 128,1024 --widths 256,1024 --epochs 3 --max-steps 2000 --json $L/torch-$p.json > $L/torch-$p.md 2>&1; echo "torch $p rc $? at $(( $(date +%s) - T0 )) s"
done
tar czf $OUT/callB2.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|  cuda (tf32|bf16)" $L/test_cuda.txt | tail -12; cat $L/torch-*.md | grep -v "^  width\|Warning\|run_backward"
