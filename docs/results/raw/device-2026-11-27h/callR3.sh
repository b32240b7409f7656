# issue 4: resident with act[1] double-buffered: logits layer sliced vs in every block vs the previous resident
source .device/common.sh
export NNPAR_DATA=$R/.device/data40k NNPAR_TEST_DATA=$R/.device/data40k  # the first 40,000 training samples (carry limit)
cp -r $D $D-old; xz -dc .device/cuda-old.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  for b in sliced both old; do B=$D; [ $b = old ] && B=$D-old
    if [ $b = sliced ]; then export NNPAR_RESIDENT_SLICED=1; else unset NNPAR_RESIDENT_SLICED; fi
    timeout 60 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,4,16 --variants resident --json $L/$b-r$r.json > $L/$b-r$r.md 2>&1; echo "$b r$r rc $? at $(( $(date +%s) - T0 )) s"
  done
done
unset NNPAR_RESIDENT_SLICED
cd $D/bin; NNPAR_RESIDENT_SLICED=1 timeout 60 ./test_cuda --gtest_filter="*Resident*" > $L/test_sliced.txt 2>&1; echo "sliced tests rc $?"; timeout 60 ./test_cuda --gtest_filter="*Resident*:*Auto*" > $L/test_both.txt 2>&1; echo "both tests rc $?"; cd $R
tar czf $OUT/callR3.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED" $L/test_sliced.txt $L/test_both.txt | tail -6; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|ERROR|rror" $f; done
