#!/usr/bin/env bash
# Device run for issue 3, round 3 (omp): old (main 8fc6062) vs new intra_op in one call.
# Usage (repo root): bash .device/omp/run.sh [quick]   -- writes under $OUT
set -u
D=$PWD/.device/omp
export NNPAR_DATA=${NNPAR_DATA:-$PWD/.device/data-small}
R=$OUT/r; mkdir -p $R
S=$D/src/bench/openmp_scaling.py
PY=python3; $PY -c "import numpy" 2>/dev/null || PY=/usr/bin/python3
if [ "${1:-}" = quick ]; then
  A="--threads 1,2 --batch 128 --width 256 --samples 512 --epochs 2"; A32="$A"; A816="$A"; L=20; PLIM=512; T1=2; T2=1
else
  A="--threads 1,2,4,8,16 --batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"
  A32="--threads 1,2,4,8,16,32 --batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"
  A816="--threads 8,16 --batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"; L=1; PLIM=6144; T1=16; T2=8
fi
pack() { tar czf $OUT/r.tgz -C $OUT r 2>/dev/null; }
step() { echo "== $1 $(date -u +%T)"; }
{ date -u; lscpu; echo "nproc $(nproc)"; for c in 0 1 16; do echo "cpu$c siblings: $(cat /sys/devices/system/cpu/cpu$c/topology/thread_siblings_list 2>/dev/null) core $(cat /sys/devices/system/cpu/cpu$c/topology/core_id 2>/dev/null)"; done
  nvidia-smi -L; free -g | head -2; $PY -c 'import torch; print("torch", torch.__version__, torch.get_num_threads())'; } > $R/machine.txt 2>&1
pack
step "1 new (dynamic), both modes, torch"
timeout $((75/L+20)) $PY $S --build $D/new $A --json $R/new.json > $R/new.md 2> $R/new.err; echo "rc $?"; pack
step "2 old intra_op"
timeout $((30/L+10)) $PY $S --build $D/old $A --modes intra_op --no-torch --json $R/old.json > $R/old.md 2>&1; echo "rc $?"; pack
step "3 profiles"
cfg=$R/profile.toml
printf '[data]\ndir = "%s"\nlimit = %s\ntest_limit = 1000\n[model]\nlayers = [784, 1024, 1024, 26]\n[train]\nepochs = 3\nbatch_size = 1024\nlr = 0.3\nshuffle = false\neval_every = 0\n[output]\nwrite_results = false\n[[strategy]]\nname = "openmp"\nlabel = "io"\nmode = "intra_op"\nthreads = 16\n' "$NNPAR_DATA" $PLIM > $cfg
for pin in no yes; do
  for shape in "1024 1024" "128 256"; do set -- $shape
    for sch in dynamic static; do for t in $T1 $T2; do
      [ "$t" = $T2 ] && [ "$2" = 256 ] && continue
      echo "--- pinned=$pin batch $1 width $2 schedule $sch threads $t"
      if [ $pin = yes ]; then export OMP_PROC_BIND=close OMP_PLACES=cores; else unset OMP_PROC_BIND OMP_PLACES; fi
      NNPAR_OMP_PROFILE=1 timeout 10 $D/new/bin/nnpar train $cfg --strategy io --set train.batch_size=$1 --set "model.layers=[784,$2,$2,26]" --set strategy.io.schedule=$sch --set strategy.io.threads=$t 2>&1 | grep -v "^results:" | tail -12
    done; done
  done
done > $R/profile.txt 2>&1
unset OMP_PROC_BIND OMP_PLACES; pack
step "4 pinned new intra_op + torch at 8,16"
OMP_PROC_BIND=close OMP_PLACES=cores timeout $((30/L+10)) $PY $S --build $D/new $A816 --modes intra_op --json $R/pinned.json > $R/pinned.md 2>&1; echo "rc $?"; pack
step "5 new static intra_op at 8,16"
timeout $((20/L+10)) $PY $S --build $D/new $A816 --modes intra_op --no-torch --omp-option schedule=static --json $R/static.json > $R/static.md 2>&1; echo "rc $?"; pack
step done
