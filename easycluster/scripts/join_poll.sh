# shellcheck shell=bash
# One poll of a join: "done" or "alive", a line "@@", then the plugin's progress so far.
# The state first: once it says done, the progress read after it is complete.
# A node whose unit is still starting (its start job queued, or ExecStart not yet at the VM:
# the turn can come right after `systemctl start --no-block`) is alive, not dead; one that died
# is in auto-restart or failed, with no VM.
# params: JOIN_PROGRESS
starting() {
  [ -n "$(systemctl list-jobs --no-legend ejabberd.service 2>/dev/null)" ] && return 0
  # shellcheck disable=SC2046  # ec_unit's words, split on purpose
  set -- $(ec_unit)
  case "$1/$2" in activating/start|activating/start-pre) return 0 ;; esac
  return 1
}
if grep -q '^result ' "$JOIN_PROGRESS"; then echo 'done'
elif pgrep -u ejabberd -f beam >/dev/null; then echo alive
elif starting; then echo alive
else echo 'done'; fi
echo '@@'
cat "$JOIN_PROGRESS" 2>/dev/null
