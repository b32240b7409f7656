# issue 4: resident bf16, DSMEM loops parts and dZ2 pulls loaded together, against HEAD: tests, phases, speed
source .device/common.sh
cd $R
cp -r $D $D-head; xz -dc .device/cuda-head.so.xz > $D-head/plugins/nnpar_strategy_cuda.so
timeout 200 $D/bin/test_cuda --gtest_filter='*ResidentBf16*:*CudaMmaTraining*bf16*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=128 > $L/phases-128.txt 2>&1
for r in 1 2; do
  for b in $D $D-head; do
    NNPAR_PLUGIN_PATH=$b/plugins timeout 100 python3 $D/src/bench/cuda_variants.py --build $b --epochs 3 --max-steps 2000 --widths 256 --batches 16,64,128 \
      --variants resident:precision=bf16 --timeout 40 --json $L/$(basename $b)-r$r.json > $L/$(basename $b)-r$r.md 2>&1
  done
done
tar czf $OUT/callU14.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|rc " $L/test.txt; grep -h phases $L/phases-*.txt; for f in $L/*-r*.md; do echo $f; grep "^| 256" $f; done
