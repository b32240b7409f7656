# issue 3 on a 32-vCPU lease: the FMA ceiling at 1..32 threads, the pair map, and 16 threads on
# a 32-vCPU host next to 16 on all of a 16-vCPU one
source .device/common.sh
C=$D/bin/bench_cpu_clock
{ lscpu; lscpu -e; } > $L/lscpu.txt 2>&1
$C --threads 1,2,4,8,12,16,24,32 --ms 300 --reps 3 --kinds fma512,add > $L/clock.txt 2>&1
$C --pairs --ms 100 --kinds fma512 > $L/pairs-fma512.txt 2>&1
$C --threads 1,8,16,32 --ms 300 --reps 3 --kinds fma512 > $L/clock-2.txt 2>&1
tar czf $OUT/${CALL:-callQ3}.tgz -C /tmp logs
lscpu | grep -E "Model name|Thread|Core|Socket|NUMA node"; cat $L/clock.txt; grep -v "^cpu .*solo\|^ *[0-9]" $L/pairs-fma512.txt | tail -40; cat $L/clock-2.txt
