set -u
R=$PWD; cd .device && tar xJf p11.tar.xz && cd $R
W=/work/main; mkdir -p $W; [ "$R" = "$W" ] || { rm -rf $W/build; ln -sfn $R/.device/p11 $W/build; }
[ "$R" = "$W" ] && { rm -rf build; ln -sfn $R/.device/p11 build; }
export LD_LIBRARY_PATH=$R/.device/p11/rt NNPAR_DATA=$R/.device/data NNPAR_TEST_DATA=$R/.device/data NNPAR_PLUGIN_PATH=$R/.device/p11/plugins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
S=$R/.device/p11/src
PY=python3; $PY -c "import numpy" 2>/dev/null || PY=/usr/bin/python3
{ date -u; nvidia-smi -L; lscpu; uptime; } > $OUT/env.txt 2>&1
T0=$(date +%s)
[ -f /tmp/pv/profile.json ] && mv /tmp/pv/profile.json /tmp/pv-profile.json; rm -rf /tmp/pv; PROF=""; [ -f /tmp/pv-profile.json ] && { mkdir -p /tmp/pv; cp /tmp/pv-profile.json /tmp/pv/profile-reused.json; PROF="--profile /tmp/pv/profile-reused.json"; }
timeout 400 $PY $S/bench/plan_validate.py $PROF --build $W/build --workers 2,4,16 --shapes small,wide,deep --limit 20000 --epochs 3 --out /tmp/pv > $OUT/plan-validate.log 2>&1
echo "plan_validate rc $? at $(( $(date +%s) - T0 )) s" >> $OUT/plan-validate.log
uptime >> $OUT/env.txt
(cd /tmp && tar czf $OUT/pv.tgz pv)
