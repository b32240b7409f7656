# W5: W4 with the layout mended for small batches and two more clock marks (after each wait for the batch): all of test_cuda, bits, clocks, speed
# HEAD (old): all of test_cuda; weights bit-identical (plain, wd, momentum; tails); clocks; speed
source .device/common.sh
cp -r $D $D-old; xz -dc .device/cuda-head.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
(cd $D/bin && timeout 300 ./test_cuda > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
for opt in "plain:" "wd:--set train.weight_decay=0.001" "mom:--set train.momentum=0.9"; do n=${opt%%:*}; a=${opt#*:}
for b in 16 100 128; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins timeout 60 $B/bin/nnpar train /tmp/r.toml --strategy cuda --set train.batch_size=$b --set train.epochs=1 --set data.limit=6000 $a --save-checkpoint $L/w-$n-$v-$b.safetensors > $L/train-$n-$v-$b.txt 2>&1
done; cmp -s $L/w-$n-new-$b.safetensors $L/w-$n-old-$b.safetensors && echo "$n batch $b: weights bit-identical" || echo "$n batch $b: weights DIFFER"; done; done > $L/bits.txt
for b in 16 64 128; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $B/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$v-$b.txt 2>&1
done; done
V=$D/src/bench/cuda_variants.py
for r in 1 2 3; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  timeout 150 python3 $V --build $B --epochs 3 --max-steps 2000 --widths 256 --batches 1,16,64,128 --variants resident:precision=bf16 --timeout 40 --json $L/$v-r$r.json > $L/$v-r$r.md 2>&1; echo "$v r$r rc $? at $(( $(date +%s) - T0 )) s"
done; done
timeout 150 python3 $V --build $D --epochs 3 --max-steps 2000 --widths 256 --batches 64,128 --variants graph:precision=bf16 --timeout 40 --json $L/graph.json > $L/graph.md 2>&1
rm -f $L/*.safetensors; tar czf $OUT/callW5.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -12; cat $L/bits.txt; for f in $L/phases-*.txt; do echo "$f: $(grep -E 'phases|rror' $f)"; done; for f in $L/*-r*.md $L/graph.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done
