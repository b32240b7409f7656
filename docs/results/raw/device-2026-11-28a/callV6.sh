# V6: where b81's plain kernel lost to b78's: old (main), r78 (b78's source rebuilt), r78b (+ the
# labels loaded after the forward), b81 (current), interleaved, batches 1-8
source .device/common.sh
for v in old r78 r78b; do cp -r $D $D-$v; done
xz -dc .device/cuda-old.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
for v in r78 r78b; do xz -dc .device/plugs/$v.so.xz > $D-$v/plugins/nnpar_strategy_cuda.so; done
T0=$(date +%s)
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  for b in b81 r78 r78b old; do B=$D; [ $b != b81 ] && B=$D-$b
    timeout 90 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,2,4,8 --variants resident --json $L/$b-r$r.json > $L/$b-r$r.md 2>&1; echo "$b r$r rc $? at $(( $(date +%s) - T0 )) s"
  done
done
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
for v in r78 r78b; do
  NNPAR_PLUGIN_PATH=$D-$v/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=1 > $L/phases-$v-1.txt 2>&1
done
tar czf $OUT/callV6.tgz -C /tmp logs
for f in $L/phases-*.txt; do echo "$f: $(grep phases $f)"; done; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done
