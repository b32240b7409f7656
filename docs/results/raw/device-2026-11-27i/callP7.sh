# issue 11: the non-blocking allreduce calibrated (iallreduce) and priced for mpi-data's overlapped buckets: CPU ranks at 16 workers, small and deep
N=b55 DATA=data40k source .device/common.sh
{ date -u; lscpu | head -20; uptime; } > $L/env.txt 2>&1
T0=$(date +%s)
timeout 190 python3 $D/src/bench/plan_validate.py --build $W/build --workers 16 --shapes small,deep --limit 20000 --epochs 3 --out /tmp/pv > $L/plan-validate.log 2>&1
echo "plan_validate rc $? at $(( $(date +%s) - T0 )) s" | tee -a $L/plan-validate.log
python3 -c "
import json; j=json.load(open('/tmp/pv/profile.json'))['comm']['mpi']
for k in ('allreduce','iallreduce'): print(k, [(e['bytes'], round(e['seconds']*1e6,1)) for e in j.get(k,[]) if e['ranks']==16])" | tee $L/mpi-tables.txt
(cd /tmp && tar czf $L/pv.tgz pv 2>/dev/null)
tar czf $OUT/callP7.tgz -C /tmp logs
grep -E "within|data-sync|hybrid" $L/plan-validate.log | cut -c1-220 | tail -14
