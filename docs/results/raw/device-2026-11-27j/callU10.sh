# issue 4: HEAD's build: all of test_cuda (the auto test at its bounds of 1-64 had not run)
source .device/common.sh
cd $R
timeout 300 $D/bin/test_cuda > $L/test_cuda.txt 2>&1; echo "rc $?" >> $L/test_cuda.txt
tar czf $OUT/callU10.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|^\[  FAILED|rc |AutoUnder" $L/test_cuda.txt
