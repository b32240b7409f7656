# issue 4: tf32 accuracy test (own 20,000-sample set); split-K target and PDL sweep under tf32
source .device/common.sh
T0=$(date +%s)
cd $D/bin
timeout 100 ./test_cuda --gtest_filter='*Tf32*' > $L/test_cuda.txt 2>&1; echo "test_cuda rc $? at $(( $(date +%s) - T0 )) s"
cd $R
P=graph:precision=tf32
V=graph,$P,$P:split_blocks=1,$P:split_blocks=32,$P:split_blocks=64,$P:split_blocks=264
timeout 150 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --timeout 20 --widths 256 --batches 32,128,1024 --variants $V,$P:pdl=on --json $L/split256.json > $L/split256.md 2>&1; echo "split256 rc $? at $(( $(date +%s) - T0 )) s"
timeout 120 python3 $D/src/bench/cuda_variants.py --build $D --epochs 3 --max-steps 2000 --timeout 20 --widths 1024 --batches 128,1024 --variants $V,$P:pdl=on --json $L/split1024.json > $L/split1024.md 2>&1; echo "split1024 rc $? at $(( $(date +%s) - T0 )) s"
tar czf $OUT/callC.tgz -C /tmp logs
grep -E "PASSED|FAILED|tf32 graph|Failure|Expected|actual" $L/test_cuda.txt | tail -12; grep "^|" $L/split256.md $L/split1024.md
