# issue 4: the session's last code (the refactor commit): all of test_cuda
source .device/common.sh
cd $R
timeout 300 $D/bin/test_cuda > $L/test_cuda.txt 2>&1; echo "rc $?" >> $L/test_cuda.txt
tar czf $OUT/callU13.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|^\[  FAILED|rc |RefusesOtherShapes" $L/test_cuda.txt
