# A/B: the multi-block softmax in nccl-tensor and the GPU pipeline stage (old plugins from f29bd14+, new from the working tree)
N=b53 DATA=data40k source .device/common.sh
rm -rf $D-old && cp -r $D $D-old && for p in tensor pipeline; do xz -dc $R/.device/old/nnpar_strategy_nccl-$p.so.xz > $D-old/plugins/nnpar_strategy_nccl-$p.so; done
md5sum $D/plugins/nnpar_strategy_nccl-tensor.so $D-old/plugins/nnpar_strategy_nccl-tensor.so
timeout 500 python3 $R/.device/ab_softmax.py $D-old $D /tmp/ab > $L/ab.txt 2>&1; echo "ab rc $?"
tar czf $OUT/callP4.tgz -C /tmp logs
cat $L/ab.txt | tail -30
