# run 1 of the cuda-s3 session (see docs/results/2026-11-26-cuda-2.md)
W=/work/nnpar-cuda; mkdir -p $W && ln -sfn $PWD/.device/cuda $W/build
export LD_LIBRARY_PATH=$PWD/.device/cuda/lib NNPAR_DATA=$PWD/.device/data NNPAR_TEST_DATA=$PWD/.device/data NNPAR_PLUGIN_PATH=$PWD/.device/cuda/plugins
export NCCL_NVLS_ENABLE=0
S=$PWD/.device/cuda/src
{ date -u; nvidia-smi; which nsys ncu; } > $OUT/env.txt 2>&1
cat > /tmp/t.toml <<T
[data]
dir = "$NNPAR_DATA"
limit = 20000
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
for b in 1 128 1024; do for v in "pdl=false:gemv_rows=0:warp_softmax=false" "pdl=true:gemv_rows=0:warp_softmax=false" "pdl=false" "pdl=true"; do
  args=""; for kv in ${v//:/ }; do args="$args --set strategy.cuda.$kv"; done
  timeout 20 $W/build/bin/nnpar train /tmp/t.toml --quiet --strategy cuda --set train.batch_size=$b --set strategy.cuda.kernel_timing=true $args 2>&1 | grep -v "^results:"
done; done > $OUT/timing.txt 2>&1
OLD=graph:pdl=false:gemv_rows=0:warp_softmax=false
timeout 45 python3 $S/bench/cuda_variants.py --build $W/build --epochs 2 --max-steps 6000 --widths 256 --batches 1,32,128,1024 --variants $OLD,graph:pdl=true:gemv_rows=0:warp_softmax=false,graph,graph:graph_steps=2048 --timeout 20 --json $OUT/variants256.json > $OUT/variants256.txt 2>&1
timeout 25 python3 $S/bench/cuda_variants.py --build $W/build --epochs 2 --max-steps 6000 --widths 1024 --batches 1,32,128,1024 --variants $OLD,graph --timeout 20 > $OUT/variants1024.txt 2>&1
cd $W/build && timeout 50 ./bin/test_cuda > $OUT/test_cuda.txt 2>&1; echo "rc $?" >> $OUT/test_cuda.txt
