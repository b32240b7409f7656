# issue 3: openmp 1.4 (traffic-priced tile grids) vs 1.3, interleaved repetitions; profiles
source .device/common.sh
cp -r $D $D-old; cp .device/openmp-1.3.so $D-old/plugins/nnpar_strategy_openmp.so
S=$D/src/bench/openmp_scaling.py; SH="--batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"
mkdir -p $L/rep; T0=$(date +%s); DEADLINE=${DEADLINE:-165}
go() { local name=$1; shift; local l=$(( DEADLINE - ($(date +%s) - T0) )); [ $l -lt 5 ] && { echo "skip $name"; return; }
  timeout $l "$@" > $L/rep/$name.md 2>&1; echo "$name rc $? at $(( $(date +%s) - T0 )) s"; }
for r in 1 2 3; do
  V=(serial new old torch); k=$(( (r-1) % 4 ))
  for i in 0 1 2 3; do v=${V[$(( (i+k) % 4 ))]}
    case $v in
      serial) go serial-r$r python3 $S --build $D $SH --threads 8 --modes "" --no-torch --json $L/rep/serial-r$r.json;;
      new) go new-r$r python3 $S --build $D $SH --threads 8,16,32 --modes intra_op --no-serial --no-torch --json $L/rep/new-r$r.json;;
      old) go old-r$r python3 $S --build $D-old $SH --threads 8,16,32 --modes intra_op --no-serial --no-torch --json $L/rep/old-r$r.json;;
      torch) go torch-r$r python3 $S --build $D $SH --threads 8,16,32 --modes "" --no-serial --json $L/rep/torch-r$r.json;;
    esac
  done
done > $L/progress.txt 2>&1
python3 $D/src/bench/openmp_repeats.py $L/rep --json $L/medians.json > $L/medians.md 2>&1
tar czf $OUT/callZ5.tgz -C /tmp logs
tail -20 $L/progress.txt; cat $L/medians.md | head -80
