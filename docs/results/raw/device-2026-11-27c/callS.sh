# the batch-3 hang on 4 GPUs (callR: reduce = "nccl" with recordings, a rank without samples):
# with the fix (the side stream forked in a step without samples), then the whole test at 4 and 2 ranks
N=b10 source .device/common.sh
T0=$(date +%s)
run() {  # label, then --set overrides
 local label=$1; shift
 NNPAR_COMM_TIMEOUT=10 timeout 60 mpirun -np ${NP:-4} $D/bin/nnpar train .device/odd4.toml --quiet "$@" > $L/odd-$label.txt 2>&1
 echo "$label: rc $? at $(( $(date +%s) - T0 )) s; $(grep -c 'error' $L/odd-$label.txt) error lines; $(tail -1 $L/odd-$label.txt | cut -c1-150)"
}
run nccl-g5 --set strategy.nccl-data.reduce='"nccl"' --set strategy.nccl-data.graph_steps=5
run nccl-g128 --set strategy.nccl-data.reduce='"nccl"'
run nccl-overlap-g5 --set strategy.nccl-data.reduce='"nccl"' --set strategy.nccl-data.overlap=true --set strategy.nccl-data.graph_steps=5
(cd $W/build && timeout 200 mpirun -np 4 ./bin/test_nccl_data > $L/test_nccl_data_np4.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data_np4.txt)
grep -E "tests ran|PASSED|FAILED|SKIPPED|rc " $L/test_nccl_data_np4.txt | tail -6
(cd $W/build && timeout 150 mpirun -np 2 ./bin/test_nccl_data > $L/test_nccl_data_np2.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data_np2.txt)
grep -E "tests ran|PASSED|FAILED|rc " $L/test_nccl_data_np2.txt | tail -4
tar czf $OUT/callS.tgz -C /tmp logs
