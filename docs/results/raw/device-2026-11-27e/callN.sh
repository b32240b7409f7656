# issue 4: resident round 4 (no divisions in the step, momentum-free kernel, per-column parts for all rows)
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 120 ./test_cuda --gtest_filter='*Resident*:*Auto*' > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
timeout 150 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,2,4,8,16 --variants graph,resident --json $L/resident.json > $L/resident.md 2>&1; echo "resident rc $? at $(( $(date +%s) - T0 )) s"
tar czf $OUT/callN.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|resident" $L/test_cuda.txt | tail -14; grep -E "^\||ERROR" $L/resident.md
