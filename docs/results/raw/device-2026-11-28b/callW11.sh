# W11: main at the session's end (cuda 1.8): all of test_cuda; the bench tests (test_cli Bench*);
# both phase clocks; bench_cluster_broadcast at 16 blocks
source .device/common.sh
(cd $D/bin && timeout 300 ./test_cuda > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
(cd $D/bin && timeout 120 ./test_cli --gtest_filter='Bench*' > $L/test-cli.txt 2>&1; echo "rc $?" >> $L/test-cli.txt)
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=1 > $L/phases-fp32-1.txt 2>&1
NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=128 --set strategy.cuda.precision=bf16 > $L/phases-bf16-128.txt 2>&1
$D/bin/bench_cluster_broadcast --clusters 16 --fresh 1 > $L/broadcast.txt 2>&1; echo "rc=$?" >> $L/broadcast.txt
tar czf $OUT/callW11.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED|rc " $L/test.txt $L/test-cli.txt | tail -8; grep -h "phases\|samples/s on" $L/phases-*.txt; cat $L/broadcast.txt
