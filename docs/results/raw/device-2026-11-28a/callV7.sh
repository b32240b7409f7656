# V7: which part of b81's refactor slows its plain kernel: r78b (fast), b81, xC (b81 with r78b's
# act_of), xABC (+ r78b's inline forward product loop and backward update), interleaved
source .device/common.sh
for v in r78b xC_src xABC_src; do cp -r $D $D-$v; xz -dc .device/plugs/$v.so.xz > $D-$v/plugins/nnpar_strategy_cuda.so; done
T0=$(date +%s)
V=$D/src/bench/cuda_variants.py
for r in 1 2; do
  for b in b81 r78b xC_src xABC_src; do B=$D; [ $b != b81 ] && B=$D-$b
    NNPAR_RESIDENT_DEFER=0 timeout 90 python3 $V --build $B --epochs 3 --max-steps 20000 --timeout 40 --widths 256 --batches 1,4,8 --variants resident --json $L/$b-r$r.json > $L/$b-r$r.md 2>&1; echo "$b r$r rc $? at $(( $(date +%s) - T0 )) s"
  done
done
tar czf $OUT/callV7.tgz -C /tmp logs
for f in $L/*-r*.md; do echo "== $f"; grep -E "^\| 256|rror" $f; done
