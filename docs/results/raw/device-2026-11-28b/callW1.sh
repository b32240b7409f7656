# W1: bf16 resident with the staged batch through a TMA ring (F0, dW0) and labels loaded after F0,
# against HEAD's plugin (6a8537e): resident tests; phase clocks; resident bf16 speed interleaved; graph bf16
source .device/common.sh
cp -r $D $D-old; xz -dc .device/cuda-head.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
(cd $D/bin && timeout 240 ./test_cuda --gtest_filter='*Resident*:*CudaMmaTraining*bf16*:*AutoUnderBf16*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
for b in 16 64 128; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $B/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$v-$b.txt 2>&1
done; done
echo "phases at $(( $(date +%s) - T0 )) s"
for b in 16 128; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins timeout 60 $B/bin/nnpar train /tmp/r.toml --strategy cuda --set train.batch_size=$b --set train.epochs=1 > $L/train-$v-$b.txt 2>&1
done; done
V=$D/src/bench/cuda_variants.py
for r in 1 2; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  timeout 150 python3 $V --build $B --epochs 3 --max-steps 2000 --widths 256 --batches 16,64,128 --variants resident:precision=bf16 --timeout 40 --json $L/$v-r$r.json > $L/$v-r$r.md 2>&1; echo "$v r$r rc $? at $(( $(date +%s) - T0 )) s"
done; done
timeout 150 python3 $V --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 16,64,128 --variants graph:precision=bf16 --timeout 40 --json $L/graph.json > $L/graph.md 2>&1
tar czf $OUT/callW1.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -8; for f in $L/phases-*.txt; do echo "$f: $(grep phases $f)"; done; for f in $L/train-*.txt; do echo "$f: $(grep -iE 'accuracy|loss' $f | tail -2 | tr '\n' ' ')"; done; for f in $L/*-r*.md $L/graph.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done
