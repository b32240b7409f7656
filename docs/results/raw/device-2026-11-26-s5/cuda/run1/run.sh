# s5 cuda call 1 (issue 4): stage_input + fuse_logits; tests, old-vs-new variants, kernel timing, ncu
W=/work/nnpar-cuda; mkdir -p $(dirname $W) $W && rm -rf $W/build && ln -sfn $PWD/.device/cuda $W/build
D=$PWD/.device/cuda; (cd $D && tar -xJf pack.tar.xz && mkdir -p old/bin && cp bin/nnpar old/bin/)
export LD_LIBRARY_PATH=$D/lib NNPAR_DATA=$PWD/.device/data-small NNPAR_TEST_DATA=$PWD/.device/data-small
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
S=$D/src; T0=$(date +%s)
{ date -u; nvidia-smi; lscpu | head -16; } > $OUT/env.txt 2>&1
(cd $W/build && NNPAR_PLUGIN_PATH=$D/plugins timeout 80 ./bin/test_cuda --gtest_filter='CudaKernels.*:CudaTraining.*Stage*:CudaTraining.FuseLogits*:CudaTraining.GraphMatchesSerial:CudaTraining.DeepModel*:CudaTraining.BatchOneMatchesSerial:CudaTraining.SmallBatch*' > $OUT/test_cuda.txt 2>&1; echo "rc $?" >> $OUT/test_cuda.txt)
grep -E "^\[  (PASSED|FAILED) |rc |FAILED" $OUT/test_cuda.txt | head; echo "tests done at +$(( $(date +%s)-T0 )) s"
# old = main's plugin (26544c1); new = this branch
V="--epochs 2 --max-steps 2000 --timeout 8"
timeout 30 python3 $S/bench/cuda_variants.py --build $D/old $V --widths 256 --batches 1,32,128,1024 --variants graph --json $OUT/v_old.json > $OUT/variants_old.txt 2>&1
NEWV=graph,graph:stage_input=true,graph:fuse_logits=true,graph:stage_input=true:fuse_logits=true
timeout 60 python3 $S/bench/cuda_variants.py --build $D $V --widths 256 --batches 1,32,128,1024 --variants $NEWV --json $OUT/v_new.json > $OUT/variants_new.txt 2>&1
timeout 20 python3 $S/bench/cuda_variants.py --build $D/old $V --widths 1024 --batches 1,128 --variants graph --json $OUT/v_old1024.json > $OUT/variants_old1024.txt 2>&1
timeout 20 python3 $S/bench/cuda_variants.py --build $D $V --widths 1024 --batches 1,128 --variants graph:stage_input=true:fuse_logits=true --json $OUT/v_new1024.json > $OUT/variants_new1024.txt 2>&1
tail -8 $OUT/variants_old.txt $OUT/variants_new.txt; (cd $OUT && tar -czf variants.tgz v_*.json variants_*.txt && rm -f v_*.json variants_*.txt); echo "variants done at +$(( $(date +%s)-T0 )) s"
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
for bv in "128 graph=true" "128 stage_input=true" "128 fuse_logits=true" "128 stage_input=true:fuse_logits=true" "1 graph=true" "1 stage_input=true:fuse_logits=true"; do
  set -- $bv; b=$1; args=""; for kv in ${2//:/ }; do args="$args --set strategy.cuda.$kv"; done
  echo "== batch $b $2"; timeout 6 $D/bin/nnpar train /tmp/t.toml --quiet --strategy cuda --set train.batch_size=$b --set strategy.cuda.kernel_timing=true $args 2>&1 | grep -v "^results:"
done > $OUT/timing.txt 2>&1
echo "timing done at +$(( $(date +%s)-T0 )) s"
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
SEC="--section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis"
for v in "graph=true" "stage_input=true:fuse_logits=true"; do
  args=""; for kv in ${v//:/ }; do args="$args --set strategy.cuda.$kv"; done
  echo "=== ncu batch 128 plain launches, $v"
  timeout 25 $NCU --kernel-name-base demangled --cache-control none --clock-control none --kernel-name regex:'GatherSrc|StagedSrc|softmax' --launch-skip 40 --launch-count 3 $SEC $D/bin/nnpar train /tmp/t.toml --quiet --strategy cuda --set train.batch_size=128 --set data.limit=8000 --set strategy.cuda.graph=false $args 2>&1 | grep -v "^results:"
done > $OUT/ncu.txt 2>&1
echo "ncu done at +$(( $(date +%s)-T0 )) s"; grep -E "^  [a-zA-Z].*\(|Duration|Registers Per|Achieved Occ|Memory Throughput|Compute \(SM\) T" $OUT/ncu.txt | head -40
