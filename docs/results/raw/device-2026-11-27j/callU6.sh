# issue 4: resident bf16 with fragment-ordered operands: tests, phase clock, speed beside the graph
source .device/common.sh
cd $R
timeout 200 $D/bin/test_cuda --gtest_filter='*ResidentBf16*:*CudaMmaTraining*bf16*:*AutoUnderBf16*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
for b in 16 128; do
  NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$b.txt 2>&1
done
timeout 150 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 4,16,32,64,128 \
  --variants resident:precision=bf16,graph:precision=bf16 --timeout 40 > $L/variants.md 2>&1
tar czf $OUT/callU6.tgz -C /tmp logs
grep -E "^\[ |rc |resident bf16|Failure|Expected|Which is|actual|error|acc " $L/test.txt | head -40; cat $L/phases-*.txt | grep phases; tail -6 $L/variants.md
