# W3: bench_cluster_broadcast (how fast 16 blocks get the same bytes from L2: loads, bulk copies,
# multicast) and its test; HEAD + the bf16 kernel's labels loaded after F0 (new) against HEAD (old)
source .device/common.sh
cp -r $D $D-old; xz -dc .device/cuda-head.so.xz > $D-old/plugins/nnpar_strategy_cuda.so
T0=$(date +%s)
(cd $D/bin && timeout 120 ./test_cli --gtest_filter='Bench*' > $L/test-cli.txt 2>&1; echo "rc $?" >> $L/test-cli.txt)
(cd $D/bin && timeout 240 ./test_cuda --gtest_filter='*Resident*:*CudaMmaTraining*bf16*:*AutoUnderBf16*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
echo "tests at $(( $(date +%s) - T0 )) s"
BB=$D/bin/bench_cluster_broadcast
timeout 120 $BB > $L/broadcast.txt 2>&1; echo "rc=$?" >> $L/broadcast.txt
for pc in 4096 8192 32768 100352; do timeout 60 $BB --clusters 16 --piece $pc --methods bulk,bulk_own,multicast > $L/broadcast-piece-$pc.txt 2>&1; echo "rc=$?" >> $L/broadcast-piece-$pc.txt; done
timeout 60 $BB --clusters 16 --bytes 12544 --piece 1024 > $L/broadcast-b16.txt 2>&1; echo "rc=$?" >> $L/broadcast-b16.txt
timeout 60 $BB --clusters 16 --bytes 200704 --piece 16384 --methods ldcg,bulk,multicast > $L/broadcast-200k.txt 2>&1; echo "rc=$?" >> $L/broadcast-200k.txt
echo "broadcast at $(( $(date +%s) - T0 )) s"
sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r.toml
for b in 16 128; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  NNPAR_PLUGIN_PATH=$B/plugins NNPAR_RESIDENT_PHASES=1 timeout 60 $B/bin/nnpar train /tmp/r.toml --quiet --strategy cuda --set train.batch_size=$b > $L/phases-$v-$b.txt 2>&1
done; done
V=$D/src/bench/cuda_variants.py
for r in 1 2 3; do for v in new old; do B=$D; [ $v = old ] && B=$D-old
  timeout 150 python3 $V --build $B --epochs 3 --max-steps 2000 --widths 256 --batches 1,16,64,128 --variants resident:precision=bf16 --timeout 40 --json $L/$v-r$r.json > $L/$v-r$r.md 2>&1; echo "$v r$r rc $? at $(( $(date +%s) - T0 )) s"
done; done
tar czf $OUT/callW3.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED|rc " $L/test-cli.txt $L/test.txt | tail -8; cat $L/broadcast.txt; for f in $L/broadcast-*.txt; do echo "== $f"; grep -v "^#" $f; done; for f in $L/phases-*.txt; do echo "$f: $(grep phases $f)"; done; for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done
