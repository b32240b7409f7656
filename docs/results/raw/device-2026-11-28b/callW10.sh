# W10: the exchanges' wait as an acquire at CTA scope (no L1 invalidation; fp32 resident kernel and
# bench_cluster_exchange's st_async) against HEAD (old): all of test_cuda; bits; speed; clocks; exchange bench
source .device/common.sh
cp -r $D $D-old; xz -dc .device/cuda-head.so.xz > $D-old/plugins/nnpar_strategy_cuda.so; xz -dc .device/bce-old.xz > $D-old/bin/bench_cluster_exchange; chmod +x $D-old/bin/bench_cluster_exchange
T0=$(date +%s)
(cd $D/bin && timeout 300 ./test_cuda > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
for opt in "plain:" "wd:--set train.weight_decay=0.001" "mom:--set train.momentum=0.9"; do n=${opt%%:*}; a=${opt#*:}
for b in 1 3 8 16; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins timeout 60 $B/bin/nnpar train /tmp/r32.toml --strategy cuda --set train.batch_size=$b --set train.epochs=1 --set data.limit=6000 $a --save-checkpoint $L/w-$n-$v-$b.safetensors > $L/train-$n-$v-$b.txt 2>&1
done; cmp -s $L/w-$n-new-$b.safetensors $L/w-$n-old-$b.safetensors && echo "$n batch $b: weights bit-identical" || echo "$n batch $b: weights DIFFER"; done; done > $L/bits.txt
V=$D/src/bench/cuda_variants.py
for r in 1 2; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  timeout 120 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,2,4,8,12 --variants resident,graph --json $L/$v-r$r.json > $L/$v-r$r.md 2>&1; echo "$v r$r rc $? at $(( $(date +%s) - T0 )) s"
done; done
for b in 1 8; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $B/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$v-$b.txt 2>&1
done; done
for v in new old; do B=$D; [ $v = old ] && B=$D-old; $B/bin/bench_cluster_exchange --clusters 2,16 --methods sync,arrive,st_async > $L/exchange-$v.txt 2>&1; echo "rc=$?" >> $L/exchange-$v.txt; done
rm -f $L/*.safetensors; tar czf $OUT/callW10.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -6; cat $L/bits.txt; for f in $L/phases-*.txt; do echo "$f: $(grep -E 'phases|rror' $f)"; done; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done; for v in new old; do echo "== exchange $v"; cat $L/exchange-$v.txt; done
