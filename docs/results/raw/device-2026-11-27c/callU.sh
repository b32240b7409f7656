# issue 11: a calibration with push_overhead (2 and 4 ranks) on 4 GPUs
N=b12 source .device/common.sh
T0=$(date +%s)
(cd $W/build && timeout 300 ./bin/nnpar calibrate --gpu --no-mpi --gpu-ranks 2,4 -o $L/x4.json) > $L/calibrate.log 2>&1; echo "calibrate rc $? at $(( $(date +%s) - T0 )) s"
tail -5 $L/calibrate.log
python3 -c "import json;j=json.load(open('$L/x4.json'));n=j['comm']['nccl'];[print(k,n.get(k)) for k in ('peer_sgd','peer_sgd_push','push_overhead')]"
tar czf $OUT/callU.tgz -C /tmp logs
