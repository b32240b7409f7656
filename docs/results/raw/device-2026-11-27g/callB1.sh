# issue 4: precision = "bf16" (cuda 1.5): all of test_cuda; whole-set fp32 vs tf32 vs bf16; nnpar vs PyTorch in bf16 and tf32
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 170 ./test_cuda > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
mkdir -p $L/compare; cp $D/src/configs/tf32.toml $L/compare/
(cd $L/compare && timeout 90 $D/bin/nnpar compare tf32.toml > compare.txt 2>&1; echo "compare rc $? at $(( $(date +%s) - T0 )) s")
for p in bf16 tf32; do
  timeout 150 python3 $D/src/bench/cuda_vs_torch.py --build $D --precision $p --batches 1,32,128,1024 --widths 256,1024 --epochs 3 --max-steps 2000 --json $L/torch-$p.json > $L/torch-$p.md 2>&1; echo "torch $p rc $? at $(( $(date +%s) - T0 )) s"
done
tar czf $OUT/callB1.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|  cuda (tf32|bf16)" $L/test_cuda.txt | tail -12; tail -8 $L/compare/compare.txt; cat $L/torch-*.md | grep -v "^  width"
