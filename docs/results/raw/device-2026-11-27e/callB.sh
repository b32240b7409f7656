# issue 4: tf32 accuracy test again; whole-set fp32 vs tf32 (configs/tf32.toml); nnpar vs PyTorch, fp32 and tf32
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 100 ./test_cuda --gtest_filter='*Tf32*:*GraphMatchesSerial*:*FuseLogits*' > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
mkdir -p $L/compare; cp $D/src/configs/tf32.toml $L/compare/
(cd $L/compare && timeout 120 $D/bin/nnpar compare tf32.toml > compare.txt 2>&1; echo "compare rc $? at $(( $(date +%s) - T0 )) s")
for p in fp32 tf32; do
  timeout 170 python3 $D/src/bench/cuda_vs_torch.py --build $D --precision $p --batches 32,128,1024 --widths 256,1024 --epochs 3 --max-steps 2000 --json $L/torch-$p.json > $L/torch-$p.md 2>&1; echo "torch $p rc $? at $(( $(date +%s) - T0 )) s"
done
tar czf $OUT/callB.tgz -C /tmp logs
grep -E "PASSED|FAILED|tf32 graph" $L/test_cuda.txt | tail -8; tail -25 $L/compare/compare.txt; cat $L/torch-*.md | grep -v "^  width"
