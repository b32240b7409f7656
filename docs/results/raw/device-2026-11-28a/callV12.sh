# V12: bench_cluster_exchange after its two global kernels became one (main at the session end); its test on a GPU
source .device/common.sh
(cd $D/bin && timeout 200 ./test_cli --gtest_filter='BenchCluster*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
for rep in 1 2; do $D/bin/bench_cluster_exchange > $L/exchange-f16-rep$rep.txt 2>&1; echo "rc=$?" >> $L/exchange-f16-rep$rep.txt; done
$D/bin/bench_cluster_exchange --floats 1 --methods barrier,st_async,global,global_ll --clusters 2,4,8,16 > $L/exchange-f1.txt 2>&1; echo "rc=$?" >> $L/exchange-f1.txt
$D/bin/bench_cluster_exchange --methods st_async,global,global_ll --clusters 16 --threads 1024 > $L/exchange-t1024.txt 2>&1; echo "rc=$?" >> $L/exchange-t1024.txt
tar czf $OUT/callV12.tgz -C /tmp logs
grep -E "OK|FAIL|SKIP|rc " $L/test.txt; cat $L/exchange-*.txt
