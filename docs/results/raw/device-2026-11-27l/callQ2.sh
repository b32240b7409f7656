# issue 3: which of the lease's vCPUs share a physical core (bench_cpu_clock --pairs), and how
# each falls behind when all 16 work; the clock table again
source .device/common.sh
C=$D/bin/bench_cpu_clock
{ lscpu; lscpu -e; grep -m1 flags /proc/cpuinfo; } > $L/lscpu.txt 2>&1
$C --pairs --ms 150 --kinds fma512 > $L/pairs-fma512-1.txt 2>&1
$C --pairs --ms 100 --kinds add > $L/pairs-add.txt 2>&1
$C --pairs --ms 150 --kinds fma512 > $L/pairs-fma512-2.txt 2>&1
$C --threads 1,2,4,8,12,16 --ms 300 --reps 3 --kinds fma512,add > $L/clock.txt 2>&1
tar czf $OUT/${CALL:-callQ2}.tgz -C /tmp logs
lscpu -e | head -20; for f in pairs-fma512-1 pairs-add pairs-fma512-2; do echo "== $f"; grep -v "^cpu .*solo" $L/$f.txt | tail -8; grep "solo" $L/$f.txt | tr '\n' ' '; echo; done; cat $L/clock.txt
