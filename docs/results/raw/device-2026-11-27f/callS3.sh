# issue 3: openmp dynamic with PREFETCHW of the lines a task writes (NNPAR_OMP_PREFETCHW=1) vs without; profiles
source .device/common.sh
S=$D/src/bench/openmp_scaling.py; SH="--batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"
mkdir -p $L/rep; T0=$(date +%s); DEADLINE=${DEADLINE:-330}
go() { local name=$1; shift; local l=$(( DEADLINE - ($(date +%s) - T0) )); [ $l -lt 5 ] && { echo "skip $name"; return; }
  timeout $l "$@" > $L/rep/$name.md 2>&1; echo "$name rc $? at $(( $(date +%s) - T0 )) s"; }
for r in 1 2 3; do
  V=(serial plain prefetchw torch); k=$(( (r-1) % 4 ))
  for i in 0 1 2 3; do v=${V[$(( (i+k) % 4 ))]}
    case $v in
      serial) go serial-r$r python3 $S --build $D $SH --threads 8 --modes "" --no-torch --json $L/rep/serial-r$r.json;;
      plain) NNPAR_OMP_PREFETCHW=0 go plain-r$r python3 $S --build $D $SH --threads 8,16,32 --modes intra_op --no-serial --no-torch --json $L/rep/plain-r$r.json;;
      prefetchw) NNPAR_OMP_PREFETCHW=1 go prefetchw-r$r python3 $S --build $D $SH --threads 8,16,32 --modes intra_op --no-serial --no-torch --json $L/rep/prefetchw-r$r.json;;
      torch) go torch-r$r python3 $S --build $D $SH --threads 8,16,32 --modes "" --no-serial --json $L/rep/torch-r$r.json;;
    esac
  done
done > $L/progress.txt 2>&1
python3 $D/src/bench/openmp_repeats.py $L/rep --json $L/medians.json > $L/medians.md 2>&1
for pf in 1 0; do
  for shape in "128 256 16" "1024 1024 16"; do set -- $shape
    echo "--- prefetchw=$pf batch $1 width $2 threads $3"
    NNPAR_OMP_PREFETCHW=$pf NNPAR_OMP_PROFILE=1 timeout 40 $D/bin/nnpar train .device/profile.toml --strategy io --set train.batch_size=$1 \
      --set "model.layers=[784,$2,$2,26]" --set strategy.io.threads=$3 2>&1 | grep -v "^\[io\] epoch [12]/"
  done
done > $L/profile.txt 2>&1
tar czf $OUT/${CALL:-callS3}.tgz -C /tmp logs
tail -14 $L/progress.txt; cat $L/medians.md | head -90; grep -A12 "^--- .* threads 16" $L/profile.txt | grep -v "^data\|epoch 2" | head -60
