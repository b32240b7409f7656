set -u
R=$PWD; cd .device && tar xJf p11.tar.xz && cd $R
W=/work/main; mkdir -p $W; [ "$R" = "$W" ] || { rm -rf $W/build; ln -sfn $R/.device/p11 $W/build; }
[ "$R" = "$W" ] && { rm -rf build; ln -sfn $R/.device/p11 build; }
export LD_LIBRARY_PATH=$R/.device/p11/rt NNPAR_DATA=$R/.device/data NNPAR_TEST_DATA=$R/.device/data NNPAR_PLUGIN_PATH=$R/.device/p11/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
{ date -u; cat /proc/sys/kernel/yama/ptrace_scope; grep -i cap /proc/self/status; ompi_info --param btl vader --level 9 | grep -E "single_copy|eager_limit"; ompi_info | grep -iE "btl|pml" ; } > $OUT/mpi-env.txt 2>&1
mkdir -p /tmp/mx; cd /tmp/mx
for shape in "deep:[784, 512, 512, 512, 26]:256" "small:[784, 256, 256, 26]:128"; do
 IFS=: read name layers batch <<< "$shape"
 cat > $name.toml <<EOT
[data]
limit = 20000
test_limit = 2000
[model]
layers = $layers
[train]
epochs = 3
batch_size = $batch
lr = 1.0
eval_every = 0
[output]
dir = "/tmp/mx/out"
[[strategy]]
name = "serial"
[[strategy]]
name = "mpi-pipeline"
label = "p"
ranks = 2
schedule = "1f1b"
micro_batches = 4
[[strategy]]
name = "mpi-data"
label = "d"
ranks = 2
mode = "sync"
EOT
done
for rep in 1; do for name in deep small; do for m in cma none eager; do
  case $m in cma) E="OMPI_MCA_btl_vader_single_copy_mechanism=cma";; none) E="OMPI_MCA_btl_vader_single_copy_mechanism=none";; eager) E="OMPI_MCA_btl_vader_eager_limit=1048576 OMPI_MCA_btl_vader_max_send_size=1048576";; esac
  echo "== $rep $name $m" ; env $E $W/build/bin/nnpar compare $name.toml --quiet 2>&1 | grep -E "^(serial|p|d) |cma|error|Error" | head -8
done; done; done > $OUT/mpi-exp.txt 2>&1
