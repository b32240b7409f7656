# issue 3: the goal shapes through nnpar compare --repeat (rounds in rotated order, paired
# speedups), then PyTorch at batch 128 beside ours, interleaved
source .device/common.sh
S=$D/src/bench/openmp_scaling.py; N=$D/bin/nnpar
cp .device/rep.toml $L/rep.toml
timeout 200 $N compare $L/rep.toml --repeat 7 --quiet > $L/compare-1024x1024.txt 2>&1; echo "1024 rc $?"
timeout 150 $N compare $L/rep.toml --repeat 7 --quiet --only io16 --set train.batch_size=128 --set "model.layers=[784,256,256,26]" > $L/compare-128x256.txt 2>&1; echo "128 rc $?"
mkdir -p $L/rep
for r in 1 2 3; do
  timeout 60 python3 $S --build $D --batch 128 --width 256 --samples 6144 --epochs 3 --threads 16 --modes intra_op --no-serial --no-ceiling --json $L/rep/io-r$r.json > $L/rep/io-r$r.md 2>&1
  timeout 60 python3 $S --build $D --batch 128 --width 256 --samples 6144 --epochs 3 --threads 8,16 --modes "" --no-serial --no-ceiling --json $L/rep/torch-r$r.json > $L/rep/torch-r$r.md 2>&1
done
python3 $D/src/bench/openmp_repeats.py $L/rep > $L/medians.md 2>&1
tar czf $OUT/${CALL:-callQ5}.tgz -C /tmp logs
grep -v "^\[" $L/compare-1024x1024.txt | tail -12; grep -v "^\[" $L/compare-128x256.txt | tail -9; cat $L/medians.md
