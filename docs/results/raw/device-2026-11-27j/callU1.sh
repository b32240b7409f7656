# issue 4: the resident kernel on BF16 tensor cores, first run: its tests, then speed beside the graph
source .device/common.sh
cd $R
timeout 240 $D/bin/test_cuda --gtest_filter='*ResidentBf16*:*CudaMmaTraining*bf16*:*Bf16Products*:*Resident*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt
timeout 200 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 16,64,128 \
  --variants resident:precision=bf16,graph:precision=bf16 --timeout 40 > $L/variants.md 2>&1
tar czf $OUT/callU1.tgz -C /tmp logs
grep -E "^\[|rc |resident bf16|Failure|Expected|Which is|actual|error" $L/test.txt | head -60; cat $L/variants.md
