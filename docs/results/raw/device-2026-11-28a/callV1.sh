# V1: cost of one all-to-all exchange inside a cluster, by method
set -u
mkdir -p $OUT/callV1; O=$OUT/callV1
{ date -u; nvidia-smi -L; } > $O/machine.txt 2>&1
B=.device/cx/bench_cluster_exchange
for rep in 1 2; do
  $B --rounds 20000 --floats 16 --threads 512 > $O/f16-t512-rep$rep.txt 2>&1; echo "rc=$?" >> $O/f16-t512-rep$rep.txt
done
$B --rounds 20000 --floats 1 --threads 512 > $O/f1-t512.txt 2>&1; echo "rc=$?" >> $O/f1-t512.txt
$B --rounds 20000 --floats 32 --threads 512 > $O/f32-t512.txt 2>&1; echo "rc=$?" >> $O/f32-t512.txt
$B --rounds 20000 --floats 16 --threads 1024 > $O/f16-t1024.txt 2>&1; echo "rc=$?" >> $O/f16-t1024.txt
cat $O/*.txt
