# shellcheck shell=bash
# Follow a join to its end, in one call: the plugin's progress lines as they are written, then a
# line "@@ done" once its result is in, or once the node died (no VM, and its unit not starting:
# a node whose start job is queued, or whose ExecStart has not reached the VM yet, is alive).
# While nothing else comes, "@@ alive" every HEARTBEAT seconds: the caller tells a host that
# went silent (cut off) from a join that takes long. No process is started to wait or to read:
# a poll from outside every 50 ms (an SSH request, a bash, a pgrep) took CPU the join needed.
# params: JOIN_PROGRESS HEARTBEAT
starting() {
  [ -n "$(systemctl list-jobs --no-legend ejabberd.service 2>/dev/null)" ] && return 0
  # shellcheck disable=SC2046  # ec_unit's words, split on purpose
  set -- $(ec_unit)
  case "$1/$2" in activating/start|activating/start-pre) return 0 ;; esac
  return 1
}
vm=
alive() {   # the VM seen before still runs (no process started), or another does, or the unit starts
  if [ -n "$vm" ] && kill -0 "$vm" 2>/dev/null; then return 0; fi
  vm=$(pgrep -o -u ejabberd -f beam) && return 0
  starting
}
seen=0
show() {    # the progress lines not shown yet; true once the result is among them
  local lines=() i
  [ -r "$JOIN_PROGRESS" ] && mapfile -t lines < "$JOIN_PROGRESS"
  if (( ${#lines[@]} < seen )); then seen=0; fi   # the VM began its file anew
  for ((i = seen; i < ${#lines[@]}; i++)); do
    printf '%s\n' "${lines[i]}"
    case ${lines[i]} in "result "*) seen=$((i + 1)); return 0 ;; esac
  done
  seen=${#lines[@]}
  return 1
}
ticks=0
until show; do
  if [ $((ticks % 10)) = 0 ] && ! alive; then show || true; break; fi
  if [ $((ticks % (HEARTBEAT * 20))) = 0 ]; then echo "@@ alive"; fi
  ticks=$((ticks + 1))
  ec_nap 0.05
done
echo "@@ done"
