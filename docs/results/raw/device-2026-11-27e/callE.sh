# issue 4: Nsight Compute of one tf32 step at batch 128 (plain launches): where forward 0's 9.5 us go
source .device/common.sh
T0=$(date +%s)
cat > $L/t.toml <<T
[data]
dir = "$NNPAR_DATA"
limit = 8000
test_limit = 100
[model]
layers = [784, 256, 256, 26]
[train]
epochs = 1
batch_size = 128
eval_every = 0
[output]
dir = "$L/results"
[[strategy]]
name = "cuda"
T
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
SEC="--section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis --section SchedulerStats"
for p in tf32 fp32; do
timeout 90 $NCU --kernel-name-base demangled --cache-control none --clock-control none --launch-skip 80 --launch-count 8 $SEC $D/bin/nnpar train $L/t.toml --quiet --strategy cuda --set strategy.cuda.graph=false --set strategy.cuda.precision=$p > $L/ncu-$p.txt 2>&1
echo "ncu $p rc $? at $(( $(date +%s) - T0 )) s"
done
timeout 90 $NCU --kernel-name-base demangled --cache-control none --clock-control none --kernel-name regex:StagedSrc --launch-skip 10 --launch-count 1 --set full --import-source yes $D/bin/nnpar train $L/t.toml --quiet --strategy cuda --set strategy.cuda.graph=false --set strategy.cuda.precision=tf32 -o $L/f0-full > $L/ncu-f0-full.txt 2>&1
echo "ncu full rc $? at $(( $(date +%s) - T0 )) s"
$NCU -i $L/f0-full.ncu-rep --page details --print-details all > $L/f0-details.txt 2>&1
$NCU -i $L/f0-full.ncu-rep --page source --print-source sass --csv > $L/f0-source.csv 2>&1; echo "source rc $?"
tar czf $OUT/callE.tgz -C /tmp logs
for p in tf32 fp32; do echo "=== $p"; grep -E "^  [a-zA-Z].*\(|Duration|Warp Cycles Per Issued|Registers Per|Achieved Occupancy|Grid Size" $L/ncu-$p.txt | cut -c1-160; done
grep -iE "stall|Warp Cycles|L2 Hit|L1/TEX Hit|Duration|Elapsed Cycles|SM Active" $L/f0-details.txt | head -60
