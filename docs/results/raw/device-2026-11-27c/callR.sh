# which nccl-data sync configuration hangs at batch 3 on 4 GPUs (test_nccl_data, callQ)
N=b9 source .device/common.sh
T0=$(date +%s)
run() {  # label, then --set overrides
 local label=$1; shift
 NNPAR_COMM_TIMEOUT=10 timeout 60 mpirun -np ${NP:-4} $D/bin/nnpar train .device/odd4.toml --quiet "$@" > $L/odd-$label.txt 2>&1
 echo "$label: rc $? at $(( $(date +%s) - T0 )) s; $(grep -c 'error' $L/odd-$label.txt) error lines; $(tail -1 $L/odd-$label.txt | cut -c1-150)"
}
run nccl-g5 --set strategy.nccl-data.reduce='"nccl"' --set strategy.nccl-data.graph_steps=5
run pull-g5 --set strategy.nccl-data.reduce='"fused_p2p"' --set strategy.nccl-data.graph_steps=5
run push-g5 --set strategy.nccl-data.reduce='"push_p2p"' --set strategy.nccl-data.graph_steps=5
run pull-plain --set strategy.nccl-data.reduce='"fused_p2p"' --set strategy.nccl-data.graph=false
run push-plain --set strategy.nccl-data.reduce='"push_p2p"' --set strategy.nccl-data.graph=false
run nccl-plain --set strategy.nccl-data.reduce='"nccl"' --set strategy.nccl-data.graph=false
run pull-g128 --set strategy.nccl-data.reduce='"fused_p2p"'
NP=3 run pull-g5-np3 --set strategy.nccl-data.reduce='"fused_p2p"' --set strategy.nccl-data.graph_steps=5
tar czf $OUT/callR.tgz -C /tmp logs
