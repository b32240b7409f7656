# issue 4: resident bf16, per-phase clock of block 0 (NNPAR_RESIDENT_PHASES) at batches 16, 64, 128
source .device/common.sh
cd $R
cat > /tmp/r.toml <<T
[data]
dir = "$NNPAR_DATA"
limit = 40000
test_limit = 100
[model]
layers = [784, 256, 256, 26]
[train]
epochs = 2
batch_size = 128
lr = 0.1
eval_every = 0
[output]
dir = "/tmp/res"
[[strategy]]
name = "cuda"
variant = "resident"
precision = "bf16"
T
for b in 16 64 128; do
  NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$b.txt 2>&1
done
timeout 120 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 16,128 \
  --variants resident:precision=bf16 --timeout 40 > $L/variants.md 2>&1
tar czf $OUT/callU2.tgz -C /tmp logs
cat $L/phases-*.txt | grep -v "^$" | tail -20; tail -6 $L/variants.md
