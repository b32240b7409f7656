# issue 3: CLDEMOTE after each intra_op task (NNPAR_OMP_DEMOTE=0/1/2/3), interleaved; line costs with demotion
source .device/common.sh
$D/bin/bench_cpu_lines --threads 2,8,16 --kib 64,256 --reps 40 > $L/lines.md 2>&1
S=$D/src/bench/openmp_scaling.py; SH="--batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"
mkdir -p $L/rep; T0=$(date +%s); DEADLINE=${DEADLINE:-300}
go() { local name=$1; shift; local l=$(( DEADLINE - ($(date +%s) - T0) )); [ $l -lt 5 ] && { echo "skip $name"; return; }
  timeout $l "$@" > $L/rep/$name.md 2>&1; echo "$name rc $? at $(( $(date +%s) - T0 )) s"; }
for r in 1 2 3; do
  V=(serial d0 d1 d2 d3); k=$(( (r-1) % 5 ))
  for i in 0 1 2 3 4; do v=${V[$(( (i+k) % 5 ))]}
    case $v in
      serial) go serial-r$r python3 $S --build $D $SH --threads 8 --modes "" --no-torch --json $L/rep/serial-r$r.json;;
      d*) NNPAR_OMP_DEMOTE=${v#d} go demote$v-r$r python3 $S --build $D $SH --threads 8,16 --modes intra_op --no-serial --no-torch --json $L/rep/demote${v#d}-r$r.json;;
    esac
  done
done > $L/progress.txt 2>&1
python3 $D/src/bench/openmp_repeats.py $L/rep --json $L/medians.json > $L/medians.md 2>&1
for d in 0 3; do echo "--- demote $d batch 128 width 256 threads 16"
  NNPAR_OMP_DEMOTE=$d NNPAR_OMP_PROFILE=1 timeout 40 $D/bin/nnpar train .device/profile.toml --strategy io 2>&1 | grep -A10 "epoch 3,"; done > $L/profile.txt 2>&1
tar czf $OUT/callY.tgz -C /tmp logs
cat $L/lines.md; tail -3 $L/progress.txt; cat $L/medians.md; cat $L/profile.txt
