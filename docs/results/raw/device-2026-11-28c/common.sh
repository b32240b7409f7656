# sourced by the call scripts: extract bundle $N, set the environment
set -u
R=$PWD; N=${N:-b1}
(cd .device && rm -rf $N && tar xJf $N.tar.xz)
D=$R/.device/$N
export LD_LIBRARY_PATH=$D/lib NNPAR_DATA=$R/.device/data NNPAR_TEST_DATA=$R/.device/data NNPAR_PLUGIN_PATH=$D/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0 NNPAR_COMM_TIMEOUT=20 PYTHONUNBUFFERED=1
L=/tmp/logs; mkdir -p $L
{ date -u; nvidia-smi -L; nvidia-smi topo -m; lscpu | head -20; } > $L/machine.txt 2>&1
W=/work/main; mkdir -p $W; [ "$R" = "$W" ] || { rm -rf $W/build; ln -sfn $D $W/build; }
[ "$R" = "$W" ] && { rm -rf build; ln -sfn $D build; }
