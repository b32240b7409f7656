# issue 4: resident bf16 with uint8 staged pixels: its tests, phase clock, resident vs graph (2 repetitions)
source .device/common.sh
cd $R
timeout 200 $D/bin/test_cuda --gtest_filter='*ResidentBf16*:*CudaMmaTraining*bf16*:*AutoUnderBf16*:*Resident*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
for b in 16 64 128; do
  NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$b.txt 2>&1
done
for r in 1 2; do
  timeout 150 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 1,16,32,64,96,128 \
    --variants resident:precision=bf16,graph:precision=bf16 --timeout 40 --json $L/bf16-r$r.json > $L/bf16-r$r.md 2>&1
done
tar czf $OUT/callU8.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|^\[  FAILED|rc |resident bf16,|cuda bf16 resident" $L/test.txt; grep -h phases $L/phases-*.txt; for f in $L/bf16-r*.md; do grep "^|" $f; done
