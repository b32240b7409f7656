# V2: the fp32 resident kernel with st.async exchanges (b78) vs main's (b77's plugin): tests,
# bit identity of the final weights, speed interleaved, phase clock, and the exchange bench again
source .device/common.sh
cp -r $D $D-old; xz -dc .device/cuda-old.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
(cd $D/bin && timeout 200 ./test_cuda --gtest_filter='*Resident*:*Auto*:*BatchOne*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
for b in 1 4 8; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins timeout 60 $B/bin/nnpar train /tmp/r32.toml --strategy cuda --set train.batch_size=$b --set train.epochs=1 --set data.limit=8000 --save-checkpoint $L/w-$v-$b.safetensors > $L/train-$v-$b.txt 2>&1
done; cmp $L/w-new-$b.safetensors $L/w-old-$b.safetensors && echo "batch $b: weights bit-identical" || echo "batch $b: weights DIFFER"; done
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  for b in new old; do B=$D; [ $b = old ] && B=$D-old
    timeout 90 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,2,4,8 --variants resident --json $L/$b-r$r.json > $L/$b-r$r.md 2>&1; echo "$b r$r rc $? at $(( $(date +%s) - T0 )) s"
  done
done
for b in 1 8; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $B/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$v-$b.txt 2>&1
done; done
$D/bin/bench_cluster_exchange --rounds 20000 > $L/exchange.txt 2>&1
tar czf $OUT/callV2.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -8; grep -h phases $L/phases-*.txt; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done; tail -3 $L/train-*-1.txt
