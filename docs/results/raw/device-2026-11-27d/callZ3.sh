# issue 3: openmp 1.4 barrier = spin (dissemination) vs omp (libgomp), same build, interleaved; profiles
source .device/common.sh
S=$D/src/bench/openmp_scaling.py; SH="--batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"
mkdir -p $L/rep; T0=$(date +%s); DEADLINE=${DEADLINE:-360}
go() { local name=$1; shift; local l=$(( DEADLINE - ($(date +%s) - T0) )); [ $l -lt 5 ] && { echo "skip $name"; return; }
  timeout $l "$@" > $L/rep/$name.md 2>&1; echo "$name rc $? at $(( $(date +%s) - T0 )) s"; }
for r in 1 2 3 4; do
  V=(serial spin omp torch); k=$(( (r-1) % 4 ))
  for i in 0 1 2 3; do v=${V[$(( (i+k) % 4 ))]}
    case $v in
      serial) go serial-r$r python3 $S --build $D $SH --threads 8 --modes "" --no-torch --json $L/rep/serial-r$r.json;;
      spin) go spin-r$r python3 $S --build $D $SH --threads 8,16,32 --modes intra_op --no-serial --no-torch --json $L/rep/spin-r$r.json;;
      omp) go omp-r$r python3 $S --build $D $SH --threads 8,16,32 --modes intra_op --no-serial --no-torch --omp-option barrier='"omp"' --json $L/rep/omp-r$r.json;;
      torch) go torch-r$r python3 $S --build $D $SH --threads 8,16,32 --modes "" --no-serial --json $L/rep/torch-r$r.json;;
    esac
  done
done > $L/progress.txt 2>&1
python3 $D/src/bench/openmp_repeats.py $L/rep --json $L/medians.json > $L/medians.md 2>&1
for b in spin omp; do for T in 16 32; do echo "--- barrier $b batch 128 width 256 threads $T"
  NNPAR_OMP_PROFILE=1 timeout 40 $D/bin/nnpar train .device/profile.toml --strategy io --set strategy.io.threads=$T --set strategy.io.barrier=\"$b\" 2>&1 | grep -A10 "epoch 3,"; done; done > $L/profile.txt 2>&1
tar czf $OUT/callZ3.tgz -C /tmp logs
tail -4 $L/progress.txt; cat $L/medians.md; grep "^---\|total\|epoch 3/3" $L/profile.txt
