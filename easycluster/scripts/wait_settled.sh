# shellcheck shell=bash
# Wait until the node's VM has done the work its start left (a table loaded from a peer goes on
# being hashed and indexed in its dets files for a while): below SETTLED_PCT % of one core over
# half a second, for at most BOUND seconds. Prints "settled PCT" or "busy PCT" (its last use).
# params: BOUND SETTLED_PCT
pid=$(pgrep -x beam.smp --cgroup /system.slice/ejabberd.service | head -n 1)
[ -n "$pid" ] || { echo "no VM"; exit 1; }
hz=$(getconf CLK_TCK)
end=$(( $(date +%s) + BOUND ))
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }   # utime + stime, in clock ticks
while :; do
  a=$(ticks) || { echo "no VM"; exit 1; }
  sleep 0.5
  b=$(ticks) || { echo "no VM"; exit 1; }
  pct=$(( (b - a) * 200 / hz ))
  if [ "$pct" -lt "$SETTLED_PCT" ]; then echo "settled $pct"; exit 0; fi
  if [ "$(date +%s)" -ge "$end" ]; then echo "busy $pct"; exit 0; fi
done
