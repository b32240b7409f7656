# issue 4: resident bf16, final: all of test_cuda; whole-set accuracy; resident vs graph (bf16), 2 interleaved
# repetitions; phase clock; auto vs PyTorch (bf16 autocast)
source .device/common.sh
cd $R
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv >> $L/machine.txt
timeout 240 $D/bin/test_cuda > $L/test_cuda.txt 2>&1; echo "rc $?" >> $L/test_cuda.txt
mkdir -p $L/compare; timeout 120 $D/bin/nnpar compare configs/tf32.toml --set output.dir=$L/compare > $L/compare.txt 2>&1; echo "rc $?" >> $L/compare.txt
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  timeout 150 python3 $V --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 1,4,8,16,32,48,64,96,128 \
    --variants resident:precision=bf16,graph:precision=bf16 --timeout 40 --json $L/bf16-r$r.json > $L/bf16-r$r.md 2>&1
done
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
for b in 16 64 128; do
  NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$b.txt 2>&1
done
timeout 150 python3 $D/src/bench/cuda_vs_torch.py --build $D --precision bf16 --variant auto --batches 8,16,32,64 --widths 256 \
  --epochs 3 --max-steps 2000 --json $L/torch-bf16-auto.json > $L/torch-bf16-auto.md 2>&1
tar czf $OUT/callU7.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|tests ran|rc " $L/test_cuda.txt; grep -E "cuda|rc " $L/compare.txt | tail -8
for f in $L/bf16-r*.md; do grep "^|" $f; done; grep -h phases $L/phases-*.txt; grep "^|" $L/torch-bf16-auto.md
