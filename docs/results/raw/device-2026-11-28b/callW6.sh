# W6: mma_bf16 without `volatile` (the compiler may schedule the mma instructions among the loads
# and conversions) against HEAD (old): all of test_cuda; bits (resident and graph, bf16); speed
source .device/common.sh
cp -r $D $D-old; xz -dc .device/cuda-head.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
(cd $D/bin && timeout 300 ./test_cuda > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
for var in resident graph; do for opt in "plain:" "mom:--set train.momentum=0.9"; do n=${opt%%:*}; a=${opt#*:}
for b in 16 100 128; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins timeout 60 $B/bin/nnpar train /tmp/r.toml --strategy cuda --set strategy.cuda.variant=$var --set train.batch_size=$b --set train.epochs=1 --set data.limit=6000 $a --save-checkpoint $L/w-$var-$n-$v-$b.safetensors > $L/train-$var-$n-$v-$b.txt 2>&1
done; cmp -s $L/w-$var-$n-new-$b.safetensors $L/w-$var-$n-old-$b.safetensors && echo "$var $n batch $b: weights bit-identical" || echo "$var $n batch $b: weights DIFFER"; done; done; done > $L/bits.txt
for b in 16 128; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $B/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$v-$b.txt 2>&1
done; done
V=$D/src/bench/cuda_variants.py
for r in 1 2 3; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  timeout 150 python3 $V --build $B --epochs 3 --max-steps 2000 --widths 256 --batches 1,16,64,128 --variants resident:precision=bf16,graph:precision=bf16 --timeout 40 --json $L/$v-r$r.json > $L/$v-r$r.md 2>&1; echo "$v r$r rc $? at $(( $(date +%s) - T0 )) s"
done; done
rm -f $L/*.safetensors; tar czf $OUT/callW6.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -8; cat $L/bits.txt; for f in $L/phases-*.txt; do echo "$f: $(grep -E 'phases|rror' $f)"; done; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done
