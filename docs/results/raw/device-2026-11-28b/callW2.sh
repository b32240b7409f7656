# W2: the TMA ring with each block's chunk order rotated by its rank (new), HEAD with dW0's column
# groups rotated by rank (stag; same numbers as HEAD), HEAD (old): tests, clocks, speed
source .device/common.sh
for v in old stag; do cp -r $D $D-$v; done
xz -dc .device/cuda-head.so.xz > $D-old/plugins/nnpar_strategy_cuda.so; xz -dc .device/cuda-stag.so.xz > $D-stag/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
(cd $D/bin && timeout 240 ./test_cuda --gtest_filter='*Resident*:*CudaMmaTraining*bf16*:*AutoUnderBf16*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
for b in 64 128; do for v in new stag old; do B=$D; [ $v != new ] && B=$D-$v
  NNPAR_PLUGIN_PATH=$B/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $B/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$v-$b.txt 2>&1
done; done
for v in stag old; do B=$D-$v
  NNPAR_PLUGIN_PATH=$B/plugins timeout 60 $B/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.epochs=1 --save-checkpoint $L/w-$v.safetensors > $L/train-$v.txt 2>&1
done
cmp -s $L/w-stag.safetensors $L/w-old.safetensors && echo "stag vs old: weights bit-identical" > $L/bits.txt || echo "stag vs old: weights DIFFER" > $L/bits.txt
echo "at $(( $(date +%s) - T0 )) s"
V=$D/src/bench/cuda_variants.py
for r in 1 2; do for v in new stag old; do B=$D; [ $v != new ] && B=$D-$v
  timeout 150 python3 $V --build $B --epochs 3 --max-steps 2000 --widths 256 --batches 16,64,128 --variants resident:precision=bf16 --timeout 40 --json $L/$v-r$r.json > $L/$v-r$r.md 2>&1; echo "$v r$r rc $? at $(( $(date +%s) - T0 )) s"
done; done
rm -f $L/*.safetensors; tar czf $OUT/callW2.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -8; cat $L/bits.txt; for f in $L/phases-*.txt; do echo "$f: $(grep phases $f)"; done; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done
