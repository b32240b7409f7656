# issue 4: the fp32 resident kernel's phase clock (NNPAR_RESIDENT_PHASES) at batches 1-16; its tests
source .device/common.sh
cd $R
timeout 200 $D/bin/test_cuda --gtest_filter='*Resident*:*AutoRuns*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
for b in 1 2 4 8 16; do
  NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$b.txt 2>&1
  timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=$b > $L/plain-$b.txt 2>&1
done
NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=1 --set strategy.cuda.resident_cluster=8 > $L/phases-1-c8.txt 2>&1
timeout 150 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 20000 --widths 256 --batches 1,4,16 \
    --variants resident,graph --timeout 40 --json $L/variants.json > $L/variants.md 2>&1
tar czf $OUT/callQ7.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|^\[  FAILED|rc " $L/test.txt; grep -h "phases" $L/phases-*.txt; grep -h "final\|samples/s on" $L/plain-*.txt | head; grep "^|" $L/variants.md
