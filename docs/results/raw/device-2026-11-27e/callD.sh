# issue 4: tf32 with slices two stages deep (new plan rule) vs split_blocks variants; kernel timing
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 100 ./test_cuda --gtest_filter='*Tf32*:*ForwardMatchesCpu*:*InputGrad*:*SplitBlocks*' > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
P=graph:precision=tf32
V=graph,$P,$P:split_blocks=1,$P:split_blocks=32
timeout 150 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --timeout 20 --widths 256 --batches 1,32,128,1024 --variants $V --json $L/rule256.json > $L/rule256.md 2>&1; echo "rule256 rc $? at $(( $(date +%s) - T0 )) s"
timeout 120 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --timeout 20 --widths 1024 --batches 1,128,1024 --variants $V,$P:pdl=on --json $L/rule1024.json > $L/rule1024.md 2>&1; echo "rule1024 rc $? at $(( $(date +%s) - T0 )) s"
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
for w in 256 1024; do for v in "fp32" "tf32" "tf32 --set strategy.cuda.split_blocks=1"; do
  n=$(echo $v | tr -d ' =-' | sed 's/setstrategy.cuda.//'); for b in 128 1024; do
  timeout 30 $D/bin/nnpar train $L/t.toml --quiet --set "model.layers=[784,$w,$w,26]" --strategy cuda --set train.batch_size=$b --set strategy.cuda.kernel_timing=true --set strategy.cuda.precision=$v > $L/timing-$w-$n-$b.txt 2>&1
done; done; done; echo "timing at $(( $(date +%s) - T0 )) s"
tar czf $OUT/callD.tgz -C /tmp logs
grep -E "PASSED|FAILED|tf32 graph" $L/test_cuda.txt | tail -6; grep "^|" $L/rule256.md $L/rule1024.md
for f in $L/timing-*; do echo "== $f"; grep -E "kernel |whole" $f; done
