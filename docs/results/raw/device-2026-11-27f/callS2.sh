# issue 3: openmp 1.5 stationary with in-place A for 1-2 panel calls vs dynamic, interleaved repetitions; profiles
source .device/common.sh
S=$D/src/bench/openmp_scaling.py; SH="--batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"
mkdir -p $L/rep; T0=$(date +%s); DEADLINE=${DEADLINE:-330}
go() { local name=$1; shift; local l=$(( DEADLINE - ($(date +%s) - T0) )); [ $l -lt 5 ] && { echo "skip $name"; return; }
  timeout $l "$@" > $L/rep/$name.md 2>&1; echo "$name rc $? at $(( $(date +%s) - T0 )) s"; }
for r in 1 2 3; do
  V=(serial dynamic stationary torch); k=$(( (r-1) % 4 ))
  for i in 0 1 2 3; do v=${V[$(( (i+k) % 4 ))]}
    case $v in
      serial) go serial-r$r python3 $S --build $D $SH --threads 8 --modes "" --no-torch --json $L/rep/serial-r$r.json;;
      dynamic) go dynamic-r$r python3 $S --build $D $SH --threads 8,16,32 --modes intra_op --no-serial --no-torch --json $L/rep/dynamic-r$r.json;;
      stationary) go stationary-r$r python3 $S --build $D $SH --threads 8,16,32 --modes intra_op --no-serial --no-torch --omp-option schedule=stationary --json $L/rep/stationary-r$r.json;;
      torch) go torch-r$r python3 $S --build $D $SH --threads 8,16,32 --modes "" --no-serial --json $L/rep/torch-r$r.json;;
    esac
  done
done > $L/progress.txt 2>&1
python3 $D/src/bench/openmp_repeats.py $L/rep --json $L/medians.json > $L/medians.md 2>&1
for sch in stationary dynamic; do
  for shape in "128 256 16" "1024 1024 16"; do set -- $shape
    echo "--- $sch batch $1 width $2 threads $3"
    NNPAR_OMP_PROFILE=1 timeout 40 $D/bin/nnpar train .device/profile.toml --strategy io --set train.batch_size=$1 \
      --set "model.layers=[784,$2,$2,26]" --set strategy.io.threads=$3 --set strategy.io.schedule=$sch 2>&1 | grep -v "^\[io\] epoch [12]/"
  done
done > $L/profile.txt 2>&1
tar czf $OUT/${CALL:-callS2}.tgz -C /tmp logs
tail -14 $L/progress.txt; cat $L/medians.md | head -90; grep -A12 "^--- .* threads 16" $L/profile.txt | head -70
