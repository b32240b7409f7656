# W9: where the fp32 resident kernel's batch-1 step waits: Nsight Compute warp-state sampling of
# one launch (3000 steps) on HEAD's kernel (b95: the bundle of W8)
source .device/common.sh
NCU=/usr/local/cuda/bin/ncu
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
timeout 400 $NCU --target-processes all -k regex:resident_kernel -c 1 --section WarpStateStats --section SourceCounters --section LaunchStats --section Occupancy --section SpeedOfLight --import-source yes -o $L/prof \
  $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=1 --set train.epochs=1 --set data.limit=3000 > $L/ncu-run.txt 2>&1; echo "ncu rc $?" >> $L/ncu-run.txt
$NCU -i $L/prof.ncu-rep --page details > $L/details.txt 2>&1
$NCU -i $L/prof.ncu-rep --page source --csv --print-source sass > $L/source-sass.csv 2>&1
NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=1 > $L/phases-1.txt 2>&1
gzip $L/source-sass.csv; rm -f $L/prof.ncu-rep; tar czf $OUT/callW9.tgz -C /tmp logs
tail -3 $L/ncu-run.txt; grep phases $L/phases-1.txt; grep -A12 "Warp State Statistics" $L/details.txt | head -8
