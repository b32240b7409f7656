# issue 4: the review's simplifications of resident_mma.cu: all of test_cuda; resident vs graph at 16, 64, 128
source .device/common.sh
cd $R
timeout 300 $D/bin/test_cuda > $L/test_cuda.txt 2>&1; echo "rc $?" >> $L/test_cuda.txt
timeout 100 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 16,64,128 \
  --variants resident:precision=bf16,graph:precision=bf16 --timeout 40 > $L/bf16.md 2>&1
tar czf $OUT/callU15.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|^\[  FAILED|rc |resident bf16,|cuda bf16 resident" $L/test_cuda.txt; grep "^| 256" $L/bf16.md
