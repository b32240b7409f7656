# issue 4: resident, only act[1] double-buffered (the minimal race fix) vs the previous resident
source .device/common.sh
export NNPAR_DATA=$R/.device/data40k NNPAR_TEST_DATA=$R/.device/data40k  # the first 40,000 training samples (carry limit)
cp -r $D $D-old; xz -dc .device/cuda-old.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  for b in dbuf old; do B=$D; [ $b = old ] && B=$D-old
    timeout 60 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,4,8 --variants resident --json $L/$b-r$r.json > $L/$b-r$r.md 2>&1; echo "$b r$r rc $? at $(( $(date +%s) - T0 )) s"
  done
done
cd $D/bin; timeout 60 ./test_cuda --gtest_filter="*Resident*:*Auto*" > $L/test_dbuf.txt 2>&1; echo "tests rc $?"; cd $R
tar czf $OUT/callR4.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED" $L/test_dbuf.txt | tail -3; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|ERROR|rror" $f; done
