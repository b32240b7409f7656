#!/usr/bin/env bash
# Device run 1 of the s5-nccl session (issue 5): reduce = "fused_p2p" smoke, the nccl-data GPU
# tests, old (main's build) vs new through bench/data_parallel_gpu.py, and where the local
# step's gap to `cuda` comes from (cuda on each GPU, nccl-data on one rank).
set -u
R=$PWD; (cd .device/nccl/s5 && tar xJf nccl5.tar.xz)
D=$R/.device/nccl/s5/nccl5
W=/work/nnpar-nccl; mkdir -p $W && rm -rf $W/build && ln -sfn $D $W/build
export LD_LIBRARY_PATH=$D/lib NNPAR_DATA=$R/.device/data NNPAR_TEST_DATA=$R/.device/data NNPAR_PLUGIN_PATH=$D/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0 NNPAR_COMM_TIMEOUT=20
{ date -u; nvidia-smi; nvidia-smi topo -m; lscpu | head -20; } > $OUT/machine.txt 2>&1
T0=$(date +%s); at() { echo "== $1 at $(( $(date +%s) - T0 )) s ($(date -u +%H:%M:%S) UTC)"; }
cat > /tmp/smoke.toml <<T
[data]
limit = 4000
test_limit = 1000
[model]
layers = [784, 64, 26]
[train]
epochs = 2
batch_size = 64
lr = 0.5
[output]
write_results = false
[[strategy]]
name = "nccl-data"
label = "fused"
ranks = 2
reduce = "fused_p2p"
T
{ at smoke; timeout 40 $W/build/bin/nnpar train /tmp/smoke.toml --strategy fused; echo "rc $?"; } > $OUT/smoke.txt 2>&1
FUSED='fused:reduce="fused_p2p"'; grep -q "^rc 0" $OUT/smoke.txt || FUSED=""
{ at tests; cd $W/build && timeout 100 mpirun -np 2 ./bin/test_nccl_data; echo "rc $?"; cd $R; } > $OUT/test_nccl_data.txt 2>&1
for which in new old; do
  b=$W/build; v="$FUSED"; [ $which = old ] && { b=$D/old; v=""; }
  { at "dp $which"; echo "python3 bench/data_parallel_gpu.py --build $b --gpus 2 --batch 1024,128 --periods 4,64 --epochs 8 --target 0.75 --sync-variants '$v'"
    timeout 100 python3 $D/src/bench/data_parallel_gpu.py --build $b --gpus 2 --batch 1024,128 --periods 4,64 --epochs 8 \
      --target 0.75 --sync-variants "$v" --out /tmp/dp-$which --json $OUT/dp-$which.json; echo "rc $?"; } > $OUT/dp-$which.txt 2>&1
done
{ at diag; timeout 60 python3 - "$D/src/bench" "$W/build" <<'P'
import sys, types
sys.path.insert(0, sys.argv[1]); import data_parallel_gpu as g
args = types.SimpleNamespace(test_limit=0, width=256, epochs=8, lr=1.0, build=sys.argv[2], target=0.75)
runs = [("cuda", 'name = "cuda"'), ("cuda-gpu1", 'name = "cuda"\ndevice = 1'),
        ("nccl1-local64", 'name = "nccl-data"\nranks = 1\nmode = "local_sgd"\nperiod = 64'),
        ("nccl1-sync", 'name = "nccl-data"\nranks = 1\nmode = "sync"'),
        ("nccl1-fused", 'name = "nccl-data"\nranks = 1\nmode = "sync"\nreduce = "fused_p2p"')]
for b in (1024, 128):
    r, _ = g.run_compare(args, f"/tmp/diag-b{b}", b, runs)
    for k, v in r.items():
        secs = " ".join(f"{e['seconds'] * 1e3:.2f}" for e in v["epochs"])
        print(f"batch {b} {k:14s} {v['rate']:12,.0f} samples/s {1e6 * b / v['rate']:7.1f} us/step {v['verdict']:6s} epoch ms: {secs}")
P
echo "rc $?"; at done; } > $OUT/diag.txt 2>&1
tar czf $OUT/results.tgz -C /tmp dp-new dp-old diag-b1024 diag-b128 2>/dev/null
