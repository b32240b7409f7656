# s5 cuda call 3 (issue 4): final: new defaults (stage_input on, fuse_logits=auto) vs main's plugin; tests; timing; ncu
W=/work/nnpar-cuda; mkdir -p $(dirname $W) $W && rm -rf $W/build && ln -sfn $PWD/.device/cuda $W/build
D=$PWD/.device/cuda; (cd $D && tar -xJf pack.tar.xz && mkdir -p old/bin && cp bin/nnpar old/bin/)
export LD_LIBRARY_PATH=$D/lib NNPAR_DATA=$PWD/.device/data-small NNPAR_TEST_DATA=$PWD/.device/data-small
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
S=$D/src; T0=$(date +%s)
{ date -u; nvidia-smi; lscpu | head -16; } > $OUT/env.txt 2>&1
(cd $W/build && timeout 75 ./bin/test_cuda --gtest_filter='-*PersistentDeepWideBatchOne*' > $OUT/test_cuda.txt 2>&1; echo "rc $?" >> $OUT/test_cuda.txt)
grep -E "^\[  (PASSED|FAILED) |^rc |FAILED" $OUT/test_cuda.txt | head -20; echo "tests done at +$(( $(date +%s)-T0 )) s"
V="--epochs 2 --max-steps 2000 --timeout 8"
mkdir -p $OUT/v
NEWV=graph,graph:stage_input=false:fuse_logits=off,graph:fuse_logits=off,graph:stage_input=false,graph:fuse_logits=head
timeout 30 python3 $S/bench/cuda_variants.py --build $D/old $V --widths 256 --batches 1,32,128,1024 --variants graph --json $OUT/v/old.json > $OUT/v/old.txt 2>&1
timeout 75 python3 $S/bench/cuda_variants.py --build $D $V --widths 256 --batches 1,32,128,1024 --variants $NEWV --json $OUT/v/new.json > $OUT/v/new.txt 2>&1
timeout 20 python3 $S/bench/cuda_variants.py --build $D/old $V --widths 1024 --batches 1,128 --variants graph --json $OUT/v/old1024.json > $OUT/v/old1024.txt 2>&1
timeout 30 python3 $S/bench/cuda_variants.py --build $D $V --widths 1024 --batches 1,128 --variants graph,graph:stage_input=false:fuse_logits=off,graph:fuse_logits=head --json $OUT/v/new1024.json > $OUT/v/new1024.txt 2>&1
(cd $OUT && tar -czf variants.tgz v && tail -7 v/old.txt v/new.txt v/old1024.txt v/new1024.txt; rm -rf v)
echo "variants done at +$(( $(date +%s)-T0 )) s"
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
for bv in "128 graph=true" "128 stage_input=false:fuse_logits=off" "1 graph=true" "1 stage_input=false:fuse_logits=off" "32 graph=true" "1024 graph=true" "1024 fuse_logits=head"; do
  set -- $bv; b=$1; args=""; for kv in ${2//:/ }; do args="$args --set strategy.cuda.$kv"; done
  echo "== batch $b $2"; timeout 6 $D/bin/nnpar train /tmp/t.toml --quiet --strategy cuda --set train.batch_size=$b --set strategy.cuda.kernel_timing=true $args 2>&1 | grep -v "^results:"
done > $OUT/timing.txt 2>&1
echo "timing done at +$(( $(date +%s)-T0 )) s"; grep -E "==|logits|softmax|whole" $OUT/timing.txt
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
SEC="--section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats"
echo "=== ncu batch 128 plain launches, defaults: one step's kernels" > $OUT/ncu.txt
timeout 30 $NCU --kernel-name-base demangled --cache-control none --clock-control none --launch-skip 80 --launch-count 8 $SEC $D/bin/nnpar train /tmp/t.toml --quiet --strategy cuda --set train.batch_size=128 --set data.limit=8000 --set strategy.cuda.graph=false >> $OUT/ncu.txt 2>&1
echo "ncu done at +$(( $(date +%s)-T0 )) s"; grep -E "^  [a-zA-Z].*\(|Duration|Warp Cycles Per Issued" $OUT/ncu.txt | cut -c1-150
