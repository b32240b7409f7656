source .device/common.sh
T0=$(date +%s)
V='g8:graph_steps=8;g16:graph_steps=16;g32:graph_steps=32'
timeout 150 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024 --periods 64 --epochs 5 --sync-variants "$V" --out /tmp/gf --json $L/gs-full.json > $L/gs-full.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/gs-full.txt
timeout 120 python3 $D/src/bench/data_parallel_gpu.py --build $D --gpus 2 --batch 1024 --periods 64 --epochs 6 --limit 62400 --sync-variants "$V" --out /tmp/gh --json $L/gs-half.json > $L/gs-half.txt 2>&1; echo "rc $? at $(( $(date +%s) - T0 )) s" >> $L/gs-half.txt
timeout 100 $D/bin/nnpar compare .device/cuda-gs.toml > $L/cuda-gs.txt 2>&1; echo "rc $?" >> $L/cuda-gs.txt
tar czf $OUT/callB.tgz -C /tmp logs
grep -E "^\| |rc " $L/gs-full.txt $L/gs-half.txt; tail -12 $L/cuda-gs.txt
