#!/usr/bin/env bash
# Device run for issue 3, round 4 (omp, session 5). Usage (repo root): bash .device/omp/run.sh
# Writes under $OUT/r (packed into $OUT/r.tgz after every step). Steps, most important first;
# each is skipped or cut when the deadline (DEADLINE s after start) is near:
#  1 machine (lscpu, SMT siblings) and memory bandwidth (PyTorch copies, 1..32 threads)
#  2 REPS repetitions, variants interleaved and rotated: serial; old = main's build (default
#    schedule dynamic); new auto / static / auto pinned (close, cores); PyTorch at 8,16,32
#  3 per-phase profiles (NNPAR_OMP_PROFILE) at 16 threads
#  4 the 1,2,4-thread grid once (both modes, serial, PyTorch), new build, schedule auto
set -u
D=$PWD/.device/omp
export NNPAR_DATA=${NNPAR_DATA:-$PWD/.device/data-small}
R=$OUT/r; mkdir -p $R/rep
S=$D/src/bench/openmp_scaling.py
PY=python3; $PY -c "import numpy" 2>/dev/null || PY=/usr/bin/python3
REPS=${REPS:-3}; DEADLINE=${DEADLINE:-150}
SH=${SH:-"--batch 1024,128 --width 1024,256 --samples 6144 --epochs 3"}
T0=$(date +%s)
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
pack() { tar czf $OUT/r.tgz -C $OUT r 2>/dev/null; }
at() { echo "== $1 at $(( $(date +%s) - T0 )) s ($(date -u +%T))"; }
go() {  # go NAME CMD...: runs CMD with what is left of the deadline, logs to $R/rep/NAME.md
  local name=$1; shift
  local l; l=$(left); if [ "$l" -lt 4 ]; then echo "skipped $name (deadline)"; return; fi
  timeout $l "$@" > $R/rep/$name.md 2>&1; echo "$name rc $?"
}
{ date -u; lscpu; echo "nproc $(nproc)"
  for c in 0 1 16; do echo "cpu$c siblings: $(cat /sys/devices/system/cpu/cpu$c/topology/thread_siblings_list 2>/dev/null)"; done
  nvidia-smi -L; free -g | head -2; uptime; $PY -c 'import torch; print("torch", torch.__version__, torch.get_num_threads())'; } > $R/machine.txt 2>&1
at "bandwidth"
timeout 12 $PY - > $R/bandwidth.txt 2>&1 <<'PYEOF'
import time, torch
for mib in (64, 1024):
    n = mib * 2**20 // 4
    a = torch.ones(n); b = torch.empty(n)
    for t in (1, 8, 16, 32):
        torch.set_num_threads(t)
        b.copy_(a)
        reps = 5 if mib == 1024 else 40
        s = time.perf_counter()
        for _ in range(reps): b.copy_(a)
        dt = time.perf_counter() - s
        print(f"copy {mib} MiB, {t} threads: {2 * mib * reps / 1024 / dt:.1f} GiB/s (read + write)")
PYEOF
pack
old="--build $D/old --modes intra_op --no-serial --no-torch"
new="--build $D/new --modes intra_op --no-serial --no-torch"
V=(serial old auto static autopinned torch)
for r in $(seq $REPS); do
  at "rep $r"
  for k in 0 1 2 3 4 5; do
    v=${V[$(( (k + r - 1) % 6 ))]}; j=$R/rep/$v-r$r.json
    case $v in
      serial) go $v-r$r $PY $S --build $D/new $SH --threads 8 --modes "" --no-torch --json $j ;;
      old) go $v-r$r $PY $S $old $SH --threads 8,16 --json $j ;;
      auto) go $v-r$r $PY $S $new $SH --threads 8,16,32 --omp-option schedule=auto --json $j ;;
      static) go $v-r$r $PY $S $new $SH --threads 8,16 --omp-option schedule=static --json $j ;;
      autopinned) go $v-r$r env OMP_PROC_BIND=close OMP_PLACES=cores $PY $S $new $SH --threads 8,16 --omp-option schedule=auto --json $j ;;
      torch) go $v-r$r $PY $S --build $D/new $SH --threads 8,16,32 --modes "" --no-serial --json $j ;;
    esac
  done
  pack
done
at "profiles"
cfg=$R/profile.toml
printf '[data]\ndir = "%s"\nlimit = 6144\ntest_limit = 1000\n[model]\nlayers = [784, 1024, 1024, 26]\n[train]\nepochs = 3\nbatch_size = 1024\nlr = 0.3\nshuffle = false\neval_every = 0\n[output]\nwrite_results = false\n[[strategy]]\nname = "openmp"\nlabel = "io"\nmode = "intra_op"\nthreads = 16\n' "$NNPAR_DATA" > $cfg
for shape in "1024 1024" "128 256"; do set -- $shape
  for sch in dynamic auto static; do for t in 16 32; do
    [ "$t" = 32 ] && [ "$sch" != auto ] && continue
    [ "$(left)" -lt 4 ] && continue
    echo "--- batch $1 width $2 schedule $sch threads $t"
    NNPAR_OMP_PROFILE=1 timeout 8 $D/new/bin/nnpar train $cfg --strategy io --set train.batch_size=$1 --set "model.layers=[784,$2,$2,26]" --set strategy.io.schedule=$sch --set strategy.io.threads=$t 2>&1 | grep -v "^results:" | tail -12
  done; done
done > $R/profile.txt 2>&1
pack
at "grid 1,2,4"
go grid124 $PY $S --build $D/new $SH --epochs 2 --threads 1,2,4 --omp-option schedule=auto --json $R/rep/grid124.json
pack
at done
