# the phase clock shared by the resident kernels (phase_clock.cuh): their tests, and each clock once
source .device/common.sh
(cd $D/bin && timeout 300 ./test_cuda --gtest_filter='*Resident*:*Auto*:*Persistent*' > $L/test.txt 2>&1; echo "rc $?" >> $L/test.txt)
sed -e "s|DATA|$NNPAR_DATA|" .device/r32.toml > /tmp/r32.toml; sed -e "s|DATA|$NNPAR_DATA|" .device/r.toml > /tmp/r16.toml
NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=1 > $L/phases-fp32-1.txt 2>&1
NNPAR_RESIDENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r16.toml --quiet --strategy cuda --set train.batch_size=128 > $L/phases-bf16-128.txt 2>&1
NNPAR_PERSISTENT_PHASES=1 timeout 60 $D/bin/nnpar train /tmp/r32.toml --quiet --strategy cuda --set train.batch_size=128 --set strategy.cuda.variant=persistent > $L/phases-persistent-128.txt 2>&1
tar czf $OUT/callQ9.tgz -C /tmp logs
grep -E "^\[  (PASSED|FAILED)|FAILED|rc " $L/test.txt | tail -8; grep -h "phases\|samples/s on" $L/phases-*.txt | cut -c1-400
