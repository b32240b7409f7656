# W8: where the bf16 resident kernel's time goes, by instruction: Nsight Compute's warp-state
# sampling of one launch (batch 128, 46 steps) on HEAD's kernel (-lineinfo builds)
source .device/common.sh
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: ${NCU:-none}" | tee $L/ncu-where.txt; [ -n "$NCU" ] && $NCU --version >> $L/ncu-where.txt 2>&1
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
if [ -n "$NCU" ]; then
  timeout 400 $NCU --target-processes all -k regex:resident_mma_kernel -c 1 --section WarpStateStats --section SourceCounters --section LaunchStats --section Occupancy --section SpeedOfLight --import-source yes -o $L/prof \
    $D/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=128 --set train.epochs=1 --set data.limit=6000 > $L/ncu-run.txt 2>&1; echo "ncu rc $?" >> $L/ncu-run.txt
  $NCU -i $L/prof.ncu-rep --page details > $L/details.txt 2>&1
  $NCU -i $L/prof.ncu-rep --page source --csv --print-source cuda > $L/source-cuda.csv 2>&1
  $NCU -i $L/prof.ncu-rep --page source --csv --print-source sass > $L/source-sass.csv 2>&1
fi
tar czf $OUT/callW8.tgz -C /tmp logs
cat $L/ncu-where.txt; tail -5 $L/ncu-run.txt; ls -la $L; head -60 $L/details.txt
