# issue 4: resident bf16 final build: all of test_cuda, then resident vs graph (bf16 and fp32), 2 interleaved repetitions
source .device/common.sh
cd $R
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv >> $L/machine.txt
timeout 300 $D/bin/test_cuda > $L/test_cuda.txt 2>&1; echo "rc $?" >> $L/test_cuda.txt
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  timeout 150 python3 $V --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 1,4,8,16,24,32,48,64,128 \
    --variants resident:precision=bf16,graph:precision=bf16 --timeout 40 --json $L/bf16-r$r.json > $L/bf16-r$r.md 2>&1
  timeout 60 python3 $V --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 1,4,8,16 \
    --variants resident,graph --timeout 40 --json $L/fp32-r$r.json > $L/fp32-r$r.md 2>&1
done
tar czf $OUT/callU5.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|tests ran|rc " $L/test_cuda.txt; for f in $L/bf16-r*.md $L/fp32-r*.md; do grep "^|" $f; done
