# shellcheck shell=bash
# A start after a full stop (an upgrade's, or its way back), not waited for (the caller watches
# the cluster). With HOLD ("all", or the node to wait for) the start is held before ejabberd
# (the plugin's boot_hold) until it is met: the hold is written for this start only and taken
# back once the VM has read its options. The configuration written before is what it starts
# with: no restart is pending any more.
# params: HOLD UPGRADE_HOLD_FILE
set -e
if [ -n "$HOLD" ]; then printf '%s\n' "$HOLD" > "$UPGRADE_HOLD_FILE"; fi
systemctl is-enabled --quiet ejabberd 2>/dev/null || ec_enable ejabberd 2>/dev/null
ec_launch || { rm -f "$UPGRADE_HOLD_FILE"; ec_log_tail; exit 1; }
if [ -n "$HOLD" ]; then
  for _ in $(seq 100); do
    pgrep -u ejabberd -f 'easy_cluster_hold' >/dev/null && break
    sleep 0.1
  done
  rm -f "$UPGRADE_HOLD_FILE"
fi
rm -f "$RESTART_PENDING"
