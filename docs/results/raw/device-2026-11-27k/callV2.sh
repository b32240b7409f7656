# issue 11: V1 again with calibration by medians of passes and contradicted points measured again (ddd73df): calibrate, then every CPU
# form at 2, 4, 16 workers on small and deep, 2 runs per point interleaved; serial drift watched meanwhile
source .device/common.sh
{ date -u; lscpu | head -24; nproc; uptime; } > $L/env.txt 2>&1
T0=$(date +%s)
timeout 540 python3 $D/src/bench/plan_validate.py --build $W/build --workers 2,4,16 --shapes small,deep --limit 20000 --epochs 3 --repeat 2 --out /tmp/pv > $L/plan-validate.log 2>&1
echo "plan_validate rc $? at $(( $(date +%s) - T0 )) s" | tee -a $L/plan-validate.log
uptime >> $L/env.txt
(cd /tmp && tar czf $L/pv.tgz pv pv-repeats 2>/dev/null)
tar czf $OUT/callV2.tgz -C /tmp logs
grep -E "within|drift|^\| serial" $L/plan-validate.log | tail -24
