# run 2 of the cuda-s3 session (see docs/results/2026-11-26-cuda-2.md)
W=/work/nnpar-cuda; mkdir -p $W && ln -sfn $PWD/.device/cuda $W/build
export LD_LIBRARY_PATH=$PWD/.device/cuda/lib NNPAR_DATA=$PWD/.device/data NNPAR_TEST_DATA=$PWD/.device/data NNPAR_PLUGIN_PATH=$PWD/.device/cuda/plugins
export NCCL_NVLS_ENABLE=0
S=$PWD/.device/cuda/src
{ date -u; nvidia-smi; } > $OUT/env.txt 2>&1
(cd $W/build && timeout 20 ./bin/test_cuda > $OUT/test_cuda.txt 2>&1; echo "rc $?" >> $OUT/test_cuda.txt)
timeout 85 python3 $S/bench/cuda_vs_torch.py --build $W/build --epochs 3 --max-steps 1000 --json $OUT/cuda_vs_torch.json > $OUT/cuda_vs_torch.txt 2>&1
cat > /tmp/t.toml <<T
[data]
dir = "$NNPAR_DATA"
limit = 30000
test_limit = 100
[model]
layers = [784, 256, 256, 26]
[train]
epochs = 1
batch_size = 128
lr = 0.1
eval_every = 0
[output]
dir = "/tmp/tres"
[[strategy]]
name = "cuda"
T
OLDK="pdl=off:gemv_rows=0:warp_softmax=false:k_stage=1"
for bv in "1 $OLDK" "1 pdl=auto" "128 $OLDK" "128 pdl=auto" "128 pdl=on" "128 split_blocks=264" "128 k_stage=1" "128 fuse_head=true" "1 fuse_head=true" "1024 $OLDK" "1024 pdl=auto" "1024 pdl=on"; do
  set -- $bv; b=$1; v=$2
  args=""; for kv in ${v//:/ }; do args="$args --set strategy.cuda.$kv"; done
  timeout 8 $W/build/bin/nnpar train /tmp/t.toml --quiet --strategy cuda --set train.batch_size=$b --set strategy.cuda.kernel_timing=true $args 2>&1 | grep -v "^results:"
done > $OUT/timing.txt 2>&1
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for b in 128 1; do
  echo "== batch $b, plain launches, one step (kernels 91..99), ncu $NCU"
  timeout 15 $NCU --clock-control none --launch-skip 90 --launch-count 9 --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size $W/build/bin/nnpar train /tmp/t.toml --quiet --strategy cuda --set train.batch_size=$b --set data.limit=3000 --set strategy.cuda.graph=false 2>&1 | grep -E "^  [a-z_]|gpu__time|launch__grid|launch__block|==PROF==|rror" | head -60
done > $OUT/ncu.txt 2>&1
OLD=graph:$OLDK
timeout 35 python3 $S/bench/cuda_variants.py --build $W/build --epochs 2 --max-steps 6000 --widths 256,1024 --batches 1,32,128,1024 --variants $OLD,graph,graph:fuse_head=true --timeout 10 --json $OUT/variants.json > $OUT/variants.txt 2>&1
