# issue 4: resident with the logits layer in every block (and act[1] guarded) vs the previous resident; all of test_cuda
source .device/common.sh
export NNPAR_DATA=$R/.device/data40k NNPAR_TEST_DATA=$R/.device/data40k  # the first 40,000 training samples (carry limit)
cp -r $D $D-old; xz -dc .device/cuda-old.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
cd $D/bin
timeout 120 ./test_cuda > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  for b in new old; do B=$D; [ $b = old ] && B=$D-old
    timeout 80 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,2,4,8,16 --variants resident --json $L/$b-r$r.json > $L/$b-r$r.md 2>&1; echo "$b r$r rc $? at $(( $(date +%s) - T0 )) s"
  done
done
timeout 60 python3 $V --build $D --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,4,16 --variants graph --json $L/graph.json > $L/graph.md 2>&1; echo "graph rc $? at $(( $(date +%s) - T0 )) s"
tar czf $OUT/callR1.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|tests from .* ran" $L/test_cuda.txt | tail -6; for f in $L/new-r1.md $L/old-r1.md $L/new-r2.md $L/old-r2.md $L/graph.md; do echo "== $f"; grep -E "^\||ERROR|rror" $f; done
