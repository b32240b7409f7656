# X3: where a step's time goes at batch 1024, width 1024 (the cells where PyTorch's graph is
# ahead): nnpar's kernel_timing (each kernel of one step alone in a graph) under fp32, tf32 and
# bf16, and PyTorch's kernels for the same step (torch.profiler)
N=b1 source .device/common.sh
cd $R
cat > /tmp/w.toml <<EOT
[data]
dir = "$NNPAR_DATA"
limit = 20480
test_limit = 100
[model]
layers = [784, 1024, 1024, 26]
[train]
epochs = 1
batch_size = 1024
lr = 0.1
eval_every = 0
[output]
dir = "/tmp/res"
[[strategy]]
name = "cuda"
EOT
for prec in fp32 tf32 bf16; do
  timeout 60 $D/bin/nnpar train /tmp/w.toml --strategy cuda --set strategy.cuda.precision=$prec \
    --set strategy.cuda.kernel_timing=true > $L/ktime-$prec.txt 2>&1; echo "rc $?" >> $L/ktime-$prec.txt
done
timeout 120 python3 .device/torch_kernels.py 1024 1024 > $L/torch-kernels.md 2>&1; echo "rc $?" >> $L/torch-kernels.md
tar czf $OUT/callX3.tgz -C /tmp logs
cat $L/ktime-*.txt; cat $L/torch-kernels.md
