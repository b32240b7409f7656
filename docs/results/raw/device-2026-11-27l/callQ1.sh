# issue 3: the host's clock at 1..16 busy cores (bench_cpu_clock) beside serial (alone, pinned,
# with 7 or 15 busy neighbours), openmp intra_op 8/16 and PyTorch 8/16, interleaved repetitions
source .device/common.sh
S=$D/src/bench/openmp_scaling.py; SH="--batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"
C=$D/bin/bench_cpu_clock
mkdir -p $L/rep; T0=$(date +%s); DEADLINE=${DEADLINE:-420}
go() { local name=$1; shift; local l=$(( DEADLINE - ($(date +%s) - T0) )); [ $l -lt 5 ] && { echo "skip $name"; return; }
  timeout $l "$@" > $L/rep/$name.md 2>&1; echo "$name rc $? at $(( $(date +%s) - T0 )) s"; }
loaded() { local n=$1; shift; taskset -c 1-$n $C --load $n --seconds 300 --kinds fma512 > /dev/null 2>&1 & local p=$!
  sleep 0.5; "$@"; kill $p; wait $p 2>/dev/null; }
$C --threads 1,2,4,8,12,16 --ms 300 --reps 3 --kinds fma512,fma256,add > $L/clock.txt 2>&1
for r in 1 2 3 4; do
  V=(serial pinned loaded7 loaded15 dynamic torch clock); k=$(( (r-1) % 7 ))
  for i in 0 1 2 3 4 5 6; do v=${V[$(( (i+k) % 7 ))]}
    case $v in
      serial) go serial-r$r python3 $S --build $D $SH --threads 8 --modes "" --no-torch --json $L/rep/serial-r$r.json;;
      pinned) go serial-pinned-r$r taskset -c 0 python3 $S --build $D $SH --threads 8 --modes "" --no-torch --json $L/rep/serial-pinned-r$r.json;;
      loaded7) loaded 7 go serial-loaded7-r$r taskset -c 0 python3 $S --build $D $SH --threads 8 --modes "" --no-torch --json $L/rep/serial-loaded7-r$r.json;;
      loaded15) loaded 15 go serial-loaded15-r$r taskset -c 0 python3 $S --build $D $SH --threads 8 --modes "" --no-torch --json $L/rep/serial-loaded15-r$r.json;;
      dynamic) go dynamic-r$r python3 $S --build $D $SH --threads 8,16 --modes intra_op --no-serial --no-torch --json $L/rep/dynamic-r$r.json;;
      torch) go torch-r$r python3 $S --build $D $SH --threads 8,16 --modes "" --no-serial --json $L/rep/torch-r$r.json;;
      clock) go clock-r$r $C --threads 1,8,16 --ms 300 --reps 1 --kinds fma512,add;;
    esac
  done
done > $L/progress.txt 2>&1
python3 $D/src/bench/openmp_repeats.py $L/rep --json $L/medians.json > $L/medians.md 2>&1
tar czf $OUT/${CALL:-callQ1}.tgz -C /tmp logs
cat $L/clock.txt; tail -30 $L/progress.txt; cat $L/medians.md | head -120; for f in $L/rep/clock-r*.md; do echo "== $f"; cat $f; done
