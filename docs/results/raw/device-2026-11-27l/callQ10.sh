# issue 3 on another host type: the FMA ceiling and pair map, then the goal shapes through
# compare --repeat (as Q2 and Q5)
source .device/common.sh
C=$D/bin/bench_cpu_clock; N=$D/bin/nnpar
{ lscpu; } > $L/lscpu.txt 2>&1
$C --threads 1,2,4,8,12,16 --ms 300 --reps 3 --kinds fma512,add > $L/clock.txt 2>&1
$C --pairs --ms 100 --kinds fma512 > $L/pairs-fma512.txt 2>&1
cp .device/rep.toml $L/rep.toml
timeout 200 $N compare $L/rep.toml --repeat 7 --quiet > $L/compare-1024x1024.txt 2>&1; echo "1024 rc $?"
timeout 150 $N compare $L/rep.toml --repeat 7 --quiet --only io16 --set train.batch_size=128 --set "model.layers=[784,256,256,26]" > $L/compare-128x256.txt 2>&1; echo "128 rc $?"
$C --threads 1,8,16 --ms 300 --reps 3 --kinds fma512 > $L/clock-2.txt 2>&1
tar czf $OUT/callQ10.tgz -C /tmp logs
grep "Model name" $L/lscpu.txt; cat $L/clock.txt; grep -v "^cpu .*solo\|^ *[0-9]" $L/pairs-fma512.txt | tail -6; grep -v "^\[" $L/compare-1024x1024.txt | tail -9; grep -v "^\[" $L/compare-128x256.txt | tail -7; cat $L/clock-2.txt
