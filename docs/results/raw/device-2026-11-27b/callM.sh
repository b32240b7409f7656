# issue 5/11: the fused reduce's cost on this machine (calibrate's peer_sgd), and where a sync epoch's time goes
N=b6 source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 150 ./bin/nnpar calibrate --gpu --no-mpi --gpu-ranks 2 -o $L/cal.json) > $L/calibrate.log 2>&1; echo "calibrate rc $? at $(( $(date +%s) - T0 )) s"
python3 -c "
import json; c=json.load(open('$L/cal.json'))['comm']['nccl']
print('peer_sgd', [(e['elements'], round(e['seconds']*1e6,1)) for e in c.get('peer_sgd',[])])
print('graph_allreduce', [(e['bytes'], round(e['seconds']*1e6,1)) for e in c['graph_allreduce']][:6])
print('stream_p2p', [(e['bytes'], round(e['seconds']*1e6,1)) for e in c['stream_p2p']][:6])"
mkdir -p /tmp/timing
cat > /tmp/timing/config.toml <<EOT
[data]
test_limit = 0
[model]
layers = [784, 256, 256, 26]
[train]
epochs = 5
batch_size = 1024
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
EOT
NNPAR_EPOCH_TIMING=1 timeout 60 $D/bin/nnpar compare /tmp/timing/config.toml --only cuda > $L/timing-cuda.txt 2>&1; echo "rc $?" >> $L/timing-cuda.txt
NNPAR_EPOCH_TIMING=1 timeout 60 $D/bin/nnpar compare /tmp/timing/config.toml --only sync --set parity.reference=sync --set train.batch_size=2048 > $L/timing-sync.txt 2>&1; echo "rc $?" >> $L/timing-sync.txt
grep -E "timing\] (staging|rank 0)|rc " $L/timing-cuda.txt $L/timing-sync.txt | tail -12
tar czf $OUT/callM.tgz -C /tmp logs
