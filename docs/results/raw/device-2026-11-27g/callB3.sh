# final build of the session: all of test_cuda on one GPU
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 170 ./test_cuda > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
tar czf $OUT/callB3.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|tests from .* ran|  cuda (tf32|bf16)" $L/test_cuda.txt | tail -14
