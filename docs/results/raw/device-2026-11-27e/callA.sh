# issue 4: precision=tf32 (tensor-core tiled products): tests, variants fp32 vs tf32, per-kernel timing
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 200 ./test_cuda --gtest_filter='-*PersistentDeepWideBatchOne*' > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
V=graph,graph:precision=tf32
timeout 120 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --timeout 20 --widths 256 --batches 1,32,128,1024 --variants $V --json $L/variants256.json > $L/variants256.md 2>&1; echo "variants256 rc $? at $(( $(date +%s) - T0 )) s"
timeout 90 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --timeout 20 --widths 1024 --batches 1,128,1024 --variants $V --json $L/variants1024.json > $L/variants1024.md 2>&1; echo "variants1024 rc $? at $(( $(date +%s) - T0 )) s"
cat > $L/t.toml <<T
[data]
dir = "$NNPAR_DATA"
limit = 20000
test_limit = 100
[model]
layers = [784, 256, 256, 26]
[train]
epochs = 1
batch_size = 128
eval_every = 0
[output]
dir = "$L/results"
[[strategy]]
name = "cuda"
T
for p in fp32 tf32; do for b in 128 1024; do
  timeout 30 $D/bin/nnpar train $L/t.toml --quiet --strategy cuda --set train.batch_size=$b --set strategy.cuda.kernel_timing=true --set strategy.cuda.precision=$p > $L/timing-$p-$b.txt 2>&1
done; done; echo "timing at $(( $(date +%s) - T0 )) s"
tar czf $OUT/callA.tgz -C /tmp logs
grep -E "PASSED|FAILED|tf32|TF32" $L/test_cuda.txt | tail -15; cat $L/variants256.md $L/variants1024.md | grep -v "^$" | tail -30
for f in $L/timing-*; do echo "== $f"; cat $f | head -30; done
