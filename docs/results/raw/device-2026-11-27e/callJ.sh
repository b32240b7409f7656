# issue 4: resident kernel templated on rows, 512 threads, no divisions in the update: tests; batch 1/8/16 vs graph
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 150 ./test_cuda --gtest_filter='*Resident*:*Tf32*:CudaTraining.GraphMatchesSerial:CudaTraining.BatchOneMatchesSerial' > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
V=graph,resident,resident:resident_cluster=8
timeout 150 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,8,16 --variants $V --json $L/resident.json > $L/resident.md 2>&1; echo "resident rc $? at $(( $(date +%s) - T0 )) s"
tar czf $OUT/callJ.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|Failure|resident|Expected|actual|which is" $L/test_cuda.txt | head -40; grep -E "^\||error" $L/resident.md
