# issue 4: the fp32 resident kernel with the layer-0 lookahead vs the previous kernel (b74's plugin),
# interleaved; its tests; its phase clock
source .device/common.sh
cp -r $D $D-old; xz -dc .device/cuda-old.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
(cd $D/bin && timeout 200 ./test_cuda --gtest_filter='*Resident*:*Auto*:*BatchOne*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  for b in new old; do B=$D; [ $b = old ] && B=$D-old
    timeout 90 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,2,4,8 --variants resident --json $L/$b-r$r.json > $L/$b-r$r.md 2>&1; echo "$b r$r rc $? at $(( $(date +%s) - T0 )) s"
  done
done
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
for b in 1 4 8; do
  NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$b.txt 2>&1
done
tar czf $OUT/callQ8.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -8; grep -h phases $L/phases-*.txt; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done
