# issue 5: epoch-boundary changes (b2) vs b1 (push default, old boundary); tests; timing breakdown
N=b2 source .device/common.sh
D2=$D
D1=$R/.device/b1; rm -rf $D1; cp -r $D2 $D1; (cd .device && tar xJf b1plugins.tar.xz) && cp .device/b1plugins/*.so $D1/plugins/
T0=$(date +%s)
(cd $W/build && timeout 200 mpirun -np 2 ./bin/test_nccl_data > $L/test_nccl_data.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data.txt)
grep -E "tests ran|PASSED|FAILED|rc " $L/test_nccl_data.txt | tail -4
(cd $W/build && timeout 200 ./bin/test_cuda > $L/test_cuda.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_cuda.txt)
grep -E "tests ran|PASSED|FAILED|rc " $L/test_cuda.txt | tail -4
mkdir -p /tmp/timing
cat > /tmp/timing/config.toml <<EOT
[data]
test_limit = 0
[model]
layers = [784, 256, 256, 26]
[train]
epochs = 5
batch_size = 2048
lr = 1.0
eval_every = 1
[output]
dir = "/tmp/timing"
[parity]
reference = "cuda"
[[strategy]]
label = "cuda"
name = "cuda"
[[strategy]]
label = "sync"
name = "nccl-data"
ranks = 2
mode = "sync"
[[strategy]]
label = "local64"
name = "nccl-data"
ranks = 2
mode = "local_sgd"
period = 64
EOT
NNPAR_EPOCH_TIMING=1 timeout 120 $D2/bin/nnpar compare /tmp/timing/config.toml > $L/timing.txt 2>&1; echo "rc $?" >> $L/timing.txt
grep -E "timing|rc " $L/timing.txt | head -40
for rep in 1 2; do for v in 1 2; do
 DV=$( [ $v = 1 ] && echo $D1 || echo $D2 )
 export LD_LIBRARY_PATH=$DV/lib NNPAR_PLUGIN_PATH=$DV/plugins
 timeout 150 python3 $DV/src/bench/data_parallel_gpu.py --build $DV --gpus 2 --batch 1024 --periods 64 --epochs 6 --sync-variants 'pull:reduce="fused_p2p"' --out /tmp/ab$v-$rep --json $L/ab-b$v-rep$rep.json > $L/ab-b$v-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/ab-b$v-rep$rep.txt
 echo "== b$v rep $rep"; grep -E "^\| (cuda|sync|local)|rc " $L/ab-b$v-rep$rep.txt
done; done
tar czf $OUT/callI.tgz -C /tmp logs
