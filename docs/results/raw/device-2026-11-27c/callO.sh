# issue 5: the fused reduce's handshake variants (NNPAR_PEER_SGD_VARIANT: bit 0 = only block 0
# announces, bit 1 = own gradient and parameters loaded before the wait), pull and push, one machine
N=b8 source .device/common.sh
T0=$(date +%s)
for V in 1 3; do
 (cd $W/build && NNPAR_PEER_SGD_VARIANT=$V timeout 100 mpirun -np 2 ./bin/test_nccl_data --gtest_filter='*P2p*' > $L/test_nccl_data_v$V.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/test_nccl_data_v$V.txt)
 grep -E "tests ran|PASSED|FAILED|max abs|rc " $L/test_nccl_data_v$V.txt | tail -8
done
P='push:reduce="push_p2p"'
for rep in 1 2; do
 for V in 0 1 2 3; do
  NNPAR_PEER_SGD_VARIANT=$V timeout 80 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024 --periods 64 --epochs 6 --sync-variants "$P" --out /tmp/o$rep$V --json $L/o-v$V-rep$rep.json > $L/o-v$V-rep$rep.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/o-v$V-rep$rep.txt
  echo "== rep $rep variant $V"; grep -E "^\| (cuda|sync|local)|rc " $L/o-v$V-rep$rep.txt | grep -v "local\|sync-no"
 done
done
tar czf $OUT/callO.tgz -C /tmp logs
