# V5: as V4 with one kernel per update kind (plain, momentum, deferred; b81) vs main's kernel (b77's
# plugin): tests, bit identity of the final weights (plain, weight decay, momentum), speed by
# NNPAR_RESIDENT_DEFER mask interleaved with the old kernel, phase clocks
source .device/common.sh
cp -r $D $D-old; xz -dc .device/cuda-old.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
(cd $D/bin && timeout 200 ./test_cuda --gtest_filter='*Resident*:*Auto*:*BatchOne*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
for opt in "plain:" "wd:--set train.weight_decay=0.001" "mom:--set train.momentum=0.9"; do n=${opt%%:*}; a=${opt#*:}
for b in 1 3 8 8d; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  E=; [ $b = 8d ] && E=1; env ${E:+NNPAR_RESIDENT_DEFER=$E} NNPAR_PLUGIN_PATH=$B/plugins timeout 60 $B/bin/nnpar train /tmp/r32.toml --strategy cuda --set train.batch_size=${b%d} --set train.epochs=1 --set data.limit=6000 $a --save-checkpoint $L/w-$n-$v-$b.safetensors > $L/train-$n-$v-$b.txt 2>&1
done; cmp -s $L/w-$n-new-$b.safetensors $L/w-$n-old-$b.safetensors && echo "$n batch $b: weights bit-identical" || echo "$n batch $b: weights DIFFER"; done; done
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  for b in dauto d1 d0 old; do B=$D; [ $b = old ] && B=$D-old
    E=; [ $b != dauto ] && E=${b#d}; env ${E:+NNPAR_RESIDENT_DEFER=$E} timeout 90 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,2,4,8 --variants resident --json $L/$b-r$r.json > $L/$b-r$r.md 2>&1; echo "$b r$r rc $? at $(( $(date +%s) - T0 )) s"
  done
done
for b in 1 2 8; do for v in d1 d0 old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_RESIDENT_DEFER=${v#d} NNPAR_PLUGIN_PATH=$B/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $B/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$v-$b.txt 2>&1
done; done
rm -f $L/*.safetensors; tar czf $OUT/callV5.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -8; for f in $L/phases-*.txt; do echo "$f: $(grep phases $f)"; done; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done; grep -h accuracy $L/train-plain-*-1.txt | tail -4
