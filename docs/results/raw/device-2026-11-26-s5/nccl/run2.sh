#!/usr/bin/env bash
# Device run 2 of the s5-nccl session (issue 5): run 1 with the fused reduce's second gradient
# buffer aligned (run 1 refused it: 269,338 floats put buffer 1 off a 16-byte boundary), and
# reduce = "auto" (fused where it can run) as the default. Old-vs-new was run 1.
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
{ at smoke; timeout 30 $W/build/bin/nnpar train /tmp/smoke.toml --strategy fused; echo "rc $?"; } > $OUT/smoke.txt 2>&1
{ at tests; cd $W/build && timeout 70 mpirun -np 2 ./bin/test_nccl_data; echo "rc $?"; cd $R; } > /tmp/test_nccl_data.txt 2>&1
cp /tmp/test_nccl_data.txt $OUT/test_nccl_data.txt
V='nccl:reduce="nccl";fused:reduce="fused_p2p"'
{ at "dp new"; echo "python3 bench/data_parallel_gpu.py --build $W/build --gpus 2 --batch 1024,128 --periods 4,64 --epochs 8 --target 0.75 --sync-variants '$V'"
  timeout 80 python3 $D/src/bench/data_parallel_gpu.py --build $W/build --gpus 2 --batch 1024,128 --periods 4,64 --epochs 8 \
    --target 0.75 --sync-variants "$V" --out /tmp/dp-new --json $OUT/dp-new.json; echo "rc $?"; } > $OUT/dp-new.txt 2>&1
{ at diag; timeout 40 python3 - "$D/src/bench" "$W/build" <<'P'
import sys, types
sys.path.insert(0, sys.argv[1]); import data_parallel_gpu as g
args = types.SimpleNamespace(test_limit=0, width=256, epochs=6, lr=1.0, build=sys.argv[2], target=0.75)
groups = [[("cuda", 'name = "cuda"'), ("cuda-gpu1", 'name = "cuda"\ndevice = 1'),
           ("nccl1-local64", 'name = "nccl-data"\nranks = 1\nmode = "local_sgd"\nperiod = 64')],
          [("nccl1-sync-nccl", 'name = "nccl-data"\nranks = 1\nmode = "sync"\nreduce = "nccl"'),
           ("nccl1-sync-fused", 'name = "nccl-data"\nranks = 1\nmode = "sync"\nreduce = "fused_p2p"')]]
b = 1024
for i, runs in enumerate(groups):
    try:
        r, _ = g.run_compare(args, f"/tmp/diag-{i}", b, runs)
    except SystemExit as e:
        print(str(e)[-1500:]); continue
    for k, v in r.items():
        secs = " ".join(f"{e['seconds'] * 1e3:.2f}" for e in v["epochs"])
        print(f"batch {b} {k:16s} {v['rate']:12,.0f} samples/s {1e6 * b / v['rate']:7.1f} us/step {v['verdict']:6s} epoch ms: {secs}")
P
echo "rc $?"; at done; } > $OUT/diag.txt 2>&1
tar czf $OUT/results.tgz -C /tmp dp-new diag-0 diag-1 test_nccl_data.txt 2>/dev/null
