# issue 3: what a core pays for lines other cores wrote (bench_cpu_lines), topology
source .device/common.sh
{ lscpu -e; cat /sys/devices/system/cpu/cpu0/cache/index*/size; cat /sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list; numactl -H 2>&1 | head; } > $L/topology.txt 2>&1
$D/bin/bench_cpu_lines --threads 1,2,4,8,16,32 --kib 64,256 --reps 40 > $L/lines.md 2> $L/lines.err
OMP_PROC_BIND=close OMP_PLACES=cores $D/bin/bench_cpu_lines --threads 2,16 --kib 64,256 --reps 40 > $L/lines-pinned.md 2>&1
$D/bin/bench_cpu_lines --threads 1,2,4,8,16,32 --kib 64,256 --reps 40 > $L/lines-again.md 2>&1
for T in 1 16; do for sch in dynamic static; do echo "--- batch 128 width 256 threads $T schedule $sch"
  NNPAR_OMP_PROFILE=1 timeout 40 $D/bin/nnpar train .device/profile.toml --strategy io --set strategy.io.threads=$T --set strategy.io.schedule=$sch 2>&1 | grep -A10 "epoch 3,"; done; done > $L/profile.txt 2>&1
tar czf $OUT/callX.tgz -C /tmp logs
cat $L/lines.md; cat $L/lines-pinned.md; head -40 $L/topology.txt
