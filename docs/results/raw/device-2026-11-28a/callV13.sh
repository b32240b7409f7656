# V13: after the review's mends (the phase clock's host side shared): resident tests, both clocks' reports
source .device/common.sh
(cd $D/bin && timeout 200 ./test_cuda --gtest_filter='*Resident*:*Auto*:*BatchOne*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml
NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=1 > $L/phases-fp32-1.txt 2>&1
NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=128 --set strategy.cuda.precision=bf16 > $L/phases-bf16-128.txt 2>&1
$D/bin/bench_cluster_exchange --rounds 5000 --clusters 16 > $L/exchange.txt 2>&1; echo "rc=$?" >> $L/exchange.txt
tar czf $OUT/callV13.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -4; grep -h phases $L/phases-*.txt; grep -h "samples/s" $L/phases-*.txt; cat $L/exchange.txt
