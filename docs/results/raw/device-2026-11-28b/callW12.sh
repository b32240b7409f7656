# W12: after the review's mends (one wait template; the benches' shared helpers): the bench
# tests' GPU halves, the resident and exchange tests, bench_cluster_exchange at 16 blocks
source .device/common.sh
(cd $D/bin && timeout 120 ./test_cli --gtest_filter='Bench*' > $L/test-cli.txt 2>&1; echo "rc $?" >> $L/test-cli.txt)
(cd $D/bin && timeout 200 ./test_cuda --gtest_filter='*Resident*:*Auto*:*BatchOne*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
$D/bin/bench_cluster_exchange --clusters 16 --methods arrive,st_async > $L/exchange.txt 2>&1; echo "rc=$?" >> $L/exchange.txt
tar czf $OUT/callW12.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED|SKIPPED|     OK)|FAILED|rc " $L/test-cli.txt $L/test.txt | tail -12; cat $L/exchange.txt
