# issue 3: tile counts at batch 128 / width 256 and 1024/1024 on 16 threads, through compare --repeat
source .device/common.sh
N=$D/bin/nnpar
cp .device/tiles.toml $L/tiles.toml
timeout 240 $N compare $L/tiles.toml --repeat 7 --quiet > $L/tiles-128x256.txt 2>&1; echo "128 rc $?"
timeout 240 $N compare $L/tiles.toml --repeat 5 --quiet --set train.batch_size=1024 --set "model.layers=[784,1024,1024,26]" \
  --set strategy.io16-m0t2.min_tile_mflop=16 --set strategy.io16-m0t2.tasks_per_thread=8 > $L/tiles-1024x1024.txt 2>&1; echo "1024 rc $?"
tar czf $OUT/${CALL:-callQ6}.tgz -C /tmp logs
grep -v "^\[" $L/tiles-128x256.txt | tail -18; grep -v "^\[" $L/tiles-1024x1024.txt | tail -18
