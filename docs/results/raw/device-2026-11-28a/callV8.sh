# V8: the final kernel (b82: st.async exchanges, labels loaded after the forward) against main's
# (b77's plugin): all of test_cuda; bit identity (plain, weight decay, momentum); resident and
# graph speed, interleaved with main's resident; phase clocks; the exchange bench
source .device/common.sh
cp -r $D $D-old; xz -dc .device/cuda-old.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
(cd $D/bin && timeout 300 ./test_cuda > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
for opt in "plain:" "wd:--set train.weight_decay=0.001" "mom:--set train.momentum=0.9"; do n=${opt%%:*}; a=${opt#*:}
for b in 1 3 8 16; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins timeout 60 $B/bin/nnpar train /tmp/r32.toml --strategy cuda --set train.batch_size=$b --set train.epochs=1 --set data.limit=6000 $a --save-checkpoint $L/w-$n-$v-$b.safetensors > $L/train-$n-$v-$b.txt 2>&1
done; cmp -s $L/w-$n-new-$b.safetensors $L/w-$n-old-$b.safetensors && echo "$n batch $b: weights bit-identical" || echo "$n batch $b: weights DIFFER"; done; done
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  for b in new old; do B=$D; [ $b = old ] && B=$D-old
    timeout 120 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,2,4,8,12 --variants resident,graph --json $L/$b-r$r.json > $L/$b-r$r.md 2>&1; echo "$b r$r rc $? at $(( $(date +%s) - T0 )) s"
  done
done
for b in 1 8; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $B/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$v-$b.txt 2>&1
done; done
$D/bin/bench_cluster_exchange > $L/exchange.txt 2>&1; echo "rc=$?" >> $L/exchange.txt
rm -f $L/*.safetensors; tar czf $OUT/callV8.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|SKIPPED|rc " $L/test.txt | tail -8; for f in $L/phases-*.txt; do echo "$f: $(grep phases $f)"; done; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done; cat $L/exchange.txt
