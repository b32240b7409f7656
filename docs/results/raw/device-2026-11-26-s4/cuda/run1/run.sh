# run 1 of the cuda-s4 session (issue 4, persistent deep plan): tests, variants, phase clocks
W=/work/nnpar-cuda; mkdir -p $(dirname $W) $W && rm -rf $W/build && ln -sfn $PWD/.device/cuda $W/build
export LD_LIBRARY_PATH=$PWD/.device/cuda/lib NNPAR_DATA=$PWD/.device/data-small NNPAR_TEST_DATA=$PWD/.device/data-small NNPAR_PLUGIN_PATH=$PWD/.device/cuda/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
S=$PWD/.device/cuda/src
{ date -u; nvidia-smi; lscpu | head -16; } > $OUT/env.txt 2>&1
(cd $W/build && timeout 45 ./bin/test_cuda --gtest_filter='*Persistent*' > $OUT/test_cuda.txt 2>&1; echo "rc $?" >> $OUT/test_cuda.txt)
tail -3 $OUT/test_cuda.txt
cat > /tmp/t.toml <<T
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
dir = "/tmp/tres"
[[strategy]]
name = "cuda"
T
for bv in "1 persistent" "1 persistent:persistent_plan=classic" "128 persistent" "128 persistent:persistent_plan=classic" "128 persistent:persistent_prefetch=false" "32 persistent" "1024 persistent"; do
  set -- $bv; b=$1; v=$2
  args=""; for kv in ${v//:/ }; do case $kv in *=*) args="$args --set strategy.cuda.$kv";; *) args="$args --set strategy.cuda.variant=$kv";; esac; done
  echo "== batch $b $v"
  NNPAR_PERSISTENT_PHASES=1 timeout 10 $W/build/bin/nnpar train /tmp/t.toml --quiet --strategy cuda --set train.batch_size=$b --set data.limit=20000 $args 2>&1 | grep -v "^results:"
done > $OUT/phases.txt 2>&1

timeout 70 python3 $S/bench/cuda_variants.py --build $W/build --epochs 2 --max-steps 3000 --widths 256 --batches 1,32,128,1024 --variants graph,persistent:persistent_plan=classic,persistent --timeout 8 --json $OUT/variants.json > $OUT/variants.txt 2>&1
tail -30 $OUT/variants.txt
