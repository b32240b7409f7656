# X2 (issue 4, where it ends): the same side-by-side under tf32 (the matrix), then fp32
# and bf16 again at width 256, batches 1 and 128 (the goals' cells), for the spread between runs
N=b1 source .device/common.sh
cd $R
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,power.limit --format=csv >> $L/machine.txt
T0=$(date +%s)
B=$D/src/bench/cuda_vs_torch.py
timeout 270 python3 $B --build $D --precision tf32 --variant auto --batches 1,32,128,1024 --widths 256,1024 \
  --epochs 3 --max-steps 5000 --json $L/torch-tf32.json > $L/torch-tf32.md 2>&1; echo "rc $?" >> $L/torch-tf32.md
echo "tf32 at $(( $(date +%s) - T0 )) s"
for prec in fp32 bf16; do
  timeout 120 python3 $B --build $D --precision $prec --variant auto --batches 1,128 --widths 256 \
    --epochs 3 --max-steps 5000 --json $L/again-$prec.json > $L/again-$prec.md 2>&1; echo "rc $?" >> $L/again-$prec.md
  echo "$prec again at $(( $(date +%s) - T0 )) s"
done
tar czf $OUT/callX2.tgz -C /tmp logs
for f in torch-tf32 again-fp32 again-bf16; do grep -E "^\||rc " $L/$f.md; done
