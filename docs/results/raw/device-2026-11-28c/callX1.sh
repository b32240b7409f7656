# X1 (issue 4, where it ends): all of test_cuda on the device; nnpar cuda (variant auto) against
# PyTorch eager and PyTorch with the step in a CUDA graph, the matrix (batch 1, 32, 128,
# 1024; width 256, 1024), fp32 and bf16, one GPU, one lease
N=b1 source .device/common.sh
cd $R
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,power.limit --format=csv >> $L/machine.txt
T0=$(date +%s)
(cd $D/bin && timeout 300 ./test_cuda > $L/test_cuda.txt 2>&1; echo "rc $?" >> $L/test_cuda.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
for prec in fp32 bf16; do
  timeout 270 python3 $D/src/bench/cuda_vs_torch.py --build $D --precision $prec --variant auto \
    --batches 1,32,128,1024 --widths 256,1024 --epochs 3 --max-steps 5000 \
    --json $L/torch-$prec.json > $L/torch-$prec.md 2>&1; echo "rc $?" >> $L/torch-$prec.md
  echo "$prec at $(( $(date +%s) - T0 )) s"
done
tar czf $OUT/callX1.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED|SKIPPED)|tests ran|rc " $L/test_cuda.txt | tail -6
for prec in fp32 bf16; do grep -E "^\||rc " $L/torch-$prec.md; done
