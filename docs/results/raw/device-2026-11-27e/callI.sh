# issue 4: where the resident kernel's 33 us per batch-1 step go (Nsight Compute, full set, source)
source .device/common.sh
T0=$(date +%s)
cat > $L/t.toml <<T
[data]
dir = "$NNPAR_DATA"
limit = 2000
test_limit = 100
[model]
layers = [784, 256, 256, 26]
[train]
epochs = 1
batch_size = 1
eval_every = 0
[output]
dir = "$L/results"
[[strategy]]
name = "cuda"
variant = "resident"
T
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 200 $NCU --kernel-name-base demangled --kernel-name regex:resident --launch-count 1 --set full --import-source yes -o $L/res $D/bin/nnpar train $L/t.toml --quiet > $L/ncu-run.txt 2>&1
echo "ncu rc $? at $(( $(date +%s) - T0 )) s"
$NCU -i $L/res.ncu-rep --page details --print-details all > $L/res-details.txt 2>&1
$NCU -i $L/res.ncu-rep --page source --print-source sass --csv > $L/res-sass.csv 2>&1; echo "sass rc $?"
$NCU -i $L/res.ncu-rep --page source --print-source cuda --csv > $L/res-cuda.csv 2>&1; echo "cuda rc $?"
ls -la $L; tar czf $OUT/callI.tgz -C /tmp logs
grep -iE "Duration|Warp Cycles Per Issued|Issued Ipc|Stall|Eligible" $L/res-details.txt | head -30
head -3 $L/res-cuda.csv | cut -c1-600
