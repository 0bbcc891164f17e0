# shellcheck shell=bash
# The function library: every script easycluster runs on a host gets it, after the script's
# parameters and before the script itself (easycluster.scripts.render). It sets the
# environment and defines the ec_* functions, and runs nothing else.
#
# Nodes run under Debian's ejabberd.service (systemd), and only there: every start, stop and
# restart goes through the unit (`systemctl is-active ejabberd` and the journal tell the
# truth), and nothing stops the ejabberd application inside a running VM. A start is asked
# with --no-block and then watched, with a bound of its own: a unit that fails or falls into
# a restart loop is named with the journal's last lines and error.log's tail.
#
# params: EPMD_REBIND RESTART_PENDING EJABBERD_ERROR_LOG OS_MOVE_APT POLICY_RC_D EJABBERD_DEFAULT MNESIA_DIR

export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER=
cd / || exit   # the ejabberd user must be able to read the working directory (erl_prim_loader)

ec_log_tail() {   # the node's own account: unit state, journal, error.log (remote.py shows it whole)
  echo "--- ejabberd.service: $(ec_unit)"
  echo "--- journal of ejabberd.service:"
  journalctl -u ejabberd -n 10 --no-pager -o short-iso 2>/dev/null || true
  echo "--- tail of $EJABBERD_ERROR_LOG:"
  tail -n 10 "$EJABBERD_ERROR_LOG" 2>/dev/null || echo "(no error.log)"
}

ec_unit() {   # "ActiveState SubState Result NRestarts" (systemctl show prints in an order of its own)
  systemctl show ejabberd -p ActiveState -p SubState -p Result -p NRestarts 2>/dev/null |
    awk -F= '{v[$1] = $2} END {print v["ActiveState"], v["SubState"], v["Result"], v["NRestarts"]}'
}

ec_launch() {   # the unit's start, not waited for. First, if epmd's addresses changed (its
  # drop-in), epmd restarts: only now, with the node stopped, is no node of this host registered.
  if [ -e "$EPMD_REBIND" ]; then
    systemctl stop epmd.service epmd.socket 2>/dev/null || true
    systemctl start epmd.socket || { echo "epmd.socket did not start"; return 1; }
    rm -f "$EPMD_REBIND"
  fi
  systemctl reset-failed ejabberd 2>/dev/null || true
  systemctl start --no-block ejabberd
}

ec_enable() {   # [--no-reload] UNIT...: started at boot. `systemctl enable` of a unit Debian ships
  # with a SysV script too (ejabberd, node-exporter) also runs update-rc.d for SysV's rc links,
  # which systemd ignores where a unit exists, and reloads systemd three times: ~0.4 s, where
  # this takes ~0.1 s (its one reload: `systemctl status` and UnitFileState show the unit
  # enabled at once). --no-reload where a daemon-reload follows anyway.
  SYSTEMCTL_SKIP_SYSV=1 systemctl enable --quiet "$@"
}

ec_start() {   # C2S_PORT BOUND: a member's start: enabled (a reboot starts it), started through the unit
  # (asked first: enabling an enabled unit still reloads systemd, inside a restart's outage)
  systemctl is-enabled --quiet ejabberd 2>/dev/null || ec_enable ejabberd 2>/dev/null
  ec_launch || { ec_log_tail; return 1; }
  ec_wait_started "$1" "$2" && rm -f "$RESTART_PENDING"
}

ec_nap() {   # SECONDS: a wait that starts no process (`sleep` would: a fork and an exec each time)
  [ -n "${EC_NAP_FD:-}" ] || exec {EC_NAP_FD}<> <(:)   # a pipe nobody writes to
  read -r -t "$1" -u "$EC_NAP_FD" _ || true
}

ec_wait_started() {   # C2S_PORT BOUND (seconds)
  # The unit is active once ejabberd said READY=1 (Type=notify: at the end of its start, its
  # command server long up), then the client port answers. No ejabberdctl call: each boots a
  # hidden Erlang VM (~0.3 s, on the cores the start itself needs) and would tell nothing more.
  # Every 0.1 s the port is tried (no process started); the unit is asked (systemctl) once the
  # port answers, and every 0.5 s before, to see a start that failed.
  local port=$1 bound=$2 end restarts0 active sub _result restarts i=0
  end=$((EPOCHSECONDS + bound))
  restarts0=$(systemctl show ejabberd -p NRestarts --value 2>/dev/null)
  while [ "$EPOCHSECONDS" -lt "$end" ]; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || [ $((i % 5)) = 0 ]; then
      read -r active sub _result restarts <<<"$(ec_unit)"
      case "$active/$sub" in
        active/running)
          if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
          fi ;;
        failed/*) echo "the node failed to start"; ec_log_tail; return 1 ;;
        */auto-restart) echo "the node died while starting (systemd restarts it)"; ec_log_tail; return 1 ;;
      esac
      if [ "${restarts:-0}" != "$restarts0" ]; then echo "the node died while starting and was restarted"; ec_log_tail; return 1; fi
    fi
    i=$((i + 1))
    ec_nap 0.1
  done
  echo "the node did not report started within $bound s"; ec_log_tail; return 1
}

ec_stop() {   # through the unit (ExecStop, then SIGTERM, SIGKILL at TimeoutStopSec): never restarted
  systemctl stop ejabberd || { echo "systemctl stop ejabberd failed"; ec_log_tail; return 1; }
  systemctl reset-failed ejabberd 2>/dev/null || true
  # an ejabberdctl call of someone else's (its own short-lived VM) may still be ending
  for _ in $(seq 50); do pgrep -u ejabberd -f beam >/dev/null || return 0; sleep 0.1; done
  echo "an Erlang VM of the ejabberd user still runs, outside ejabberd.service: $(pgrep -a -u ejabberd -f beam | cut -c1-200)"
  return 1
}

ec_ctl() {   # [--no-timeout] COMMAND ARGS...: `ejabberdctl COMMAND ARGS` inside the running node,
  # its output and exit status (3: no node answered; else ejabberd's, 60 s time limit unless
  # --no-timeout). ejabberdctl boots an Erlang VM of its own to ask the node one thing
  # (ejabberd_ctl:process/1), ~0.3 s of CPU; erl_call (erlang-base's C node) asks the same in
  # ~10 ms. Its cookie is read from the ejabberd user's home, never from a command line. A
  # distribution over TLS, which erl_call does not speak, is asked through ejabberdctl
  local limit=(-timeout 60) node flag a out status terms=()
  if [ "${1:-}" = --no-timeout ]; then limit=(); shift; fi
  # (and an argument that is not ASCII: the node would print it back encoded twice)
  if ! command -v erl_call >/dev/null || grep -q '^ERL_OPTIONS=.*-proto_dist' "$EJABBERD_DEFAULT" 2>/dev/null ||
     [[ "$*" = *[![:ascii:]]* ]]; then
    if [ ${#limit[@]} = 0 ]; then ejabberdctl --no-timeout "$@"; else ejabberdctl "$@"; fi
    return
  fi
  node=$(sed -n 's/^ERLANG_NODE=//p' "$EJABBERD_DEFAULT" 2>/dev/null | tail -n 1 | tr -d "\"'")
  node=${node:-ejabberd@$(hostname -s)}
  case ${node#*@} in *.*) flag=-name ;; *) flag=-sname ;; esac
  for a in "$@"; do   # each argument as a string, as ejabberdctl passes it; erl_call's terms have
    # no escapes, so one with other characters than these goes as its bytes (readable in ps otherwise)
    if [[ $a =~ ^[A-Za-z0-9_.@:/=+,-]*$ ]]; then terms+=("\"$a\"")
    else terms+=("[$(printf '%s' "$a" | od -An -tu1 -v | tr -s ' \n' ',' | sed 's/^,//; s/,$//')]"); fi
  done
  out=$(IFS=,; HOME=$MNESIA_DIR erl_call "$flag" "$node" "${limit[@]}" -fetch_stdout \
          -a "ejabberd_ctl process [[${terms[*]}]]" 2>&1) ||
    { echo "Failed RPC connection to the node $node: $out"; return 3; }
  status=${out##*$'\n'}      # the answer's term, after the command's own output
  case $out in *$'\n'*) printf '%s\n' "${out%$'\n'*}" ;; esac
  case $status in
    '{badrpc'*) echo "Failed RPC connection to the node $node: $status"; return 3 ;;   # as ejabberdctl
    ''|*[!0-9]*) echo "$status"; return 1 ;;
  esac
  return "$status"
}

ec_plugin_built_with() {   # what the plugin's compiled beams depend on: the same here, the same beams
  # shellcheck disable=SC2016  # dpkg-query's format, not the shell's
  dpkg-query -W -f='${Version} ' ejabberd erlang-base
}

ec_retire() {   # stopped and disabled: a node that is no member must not come back at boot
  ec_stop || return 1
  systemctl disable --quiet ejabberd 2>/dev/null || true
}

ec_sources_toward() {   # FROM TO [DIR]: apt's sources with release FROM's codename replaced by TO's
  # (its suites, backports and security updates): in place, or copied into DIR (sources.list
  # and parts/), the host's own left as they are
  local f out
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    if [ -z "$3" ]; then sed -i -E "s/\\b$1\\b/$2/g" "$f"; continue; fi
    case $f in /etc/apt/sources.list) out=$3/sources.list ;; *) out=$3/parts/${f##*/} ;; esac
    sed -E "s/\\b$1\\b/$2/g" "$f" > "$out"
  done
}

ec_apt_toward() {   # RELEASE (a codename, or empty): APT_OPTS, apt-get's options to see RELEASE's
  # suites from a host that runs another (a scratch copy of its sources and lists of their own
  # in OS_MOVE_APT; nothing of the host's apt changes); none where it runs RELEASE already
  APT_OPTS=()
  local now
  # shellcheck source=/dev/null
  now=$(. /etc/os-release && echo "$VERSION_CODENAME")
  if [ -z "$1" ] || [ "$1" = "$now" ]; then return 0; fi
  rm -rf "$OS_MOVE_APT"
  mkdir -p "$OS_MOVE_APT/parts" "$OS_MOVE_APT/lists/partial"
  : > "$OS_MOVE_APT/sources.list"
  ec_sources_toward "$now" "$1" "$OS_MOVE_APT"
  # shellcheck disable=SC2034  # read by the script that called it
  APT_OPTS=(-o "Dir::Etc::sourcelist=$OS_MOVE_APT/sources.list" -o "Dir::Etc::sourceparts=$OS_MOVE_APT/parts"
            -o "Dir::State::Lists=$OS_MOVE_APT/lists")
}

ec_policy_rc_d() {   # POLICY (the script's body after its marker line): what packages may start
  # while apt-get runs; removed when the calling script exits. One of ours (its marker line)
  # that a cut-off run left behind is replaced; the operator's own is left as it is.
  if grep -qs '^# easycluster' "$POLICY_RC_D"; then rm -f "$POLICY_RC_D"; fi
  [ -e "$POLICY_RC_D" ] && return 0
  printf '#!/bin/sh\n# easycluster: while apt-get runs (removed after)\n%s\n' "$1" > "$POLICY_RC_D"
  chmod 755 "$POLICY_RC_D"
  trap 'rm -f "$POLICY_RC_D"' EXIT
}

ec_boot_id() {   # which boot this is: the kernel's boot id and when PID 1 started (in clock
  # ticks since the kernel booted), so that a container's reboot, under the same kernel, counts
  echo "boot=$(cat /proc/sys/kernel/random/boot_id) $(cut -d' ' -f22 /proc/1/stat)"
}

ec_psql() {   # psql as PostgreSQL's superuser (its unix socket, peer), stopping at the first error
  runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres "$@"
}

ec_pg_role() {   # VERIFIER_FILE USER: the role with the SCRAM verifier as its password (on stdin)
  local verifier verb
  verifier=$(cat "$1")
  if [ -n "$(ec_psql -t -A -c "SELECT 1 FROM pg_roles WHERE rolname = '$2'")" ]; then verb=ALTER; else verb=CREATE; fi
  printf "%s ROLE %s WITH LOGIN PASSWORD '%s';\n" "$verb" "$2" "$verifier" | ec_psql
}

ec_pg_database() {   # NAME OWNER: UTF8, C collation (ejabberd's schema sorts bytewise)
  ec_psql -c "CREATE DATABASE $1 OWNER $2 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
}

ec_exporter_start() {   # node-exporter enabled and restarted with its settings: it keeps no state, and it
  # ends on SIGHUP (its unit's "reload"), so a restart is the one way to make it read them
  ec_enable prometheus-node-exporter
  systemctl restart prometheus-node-exporter
}

ec_etcdctl() {   # etcdctl (API 3) against this member's etcd, with short timeouts
  ETCDCTL_API=3 timeout 15 etcdctl --endpoints=http://127.0.0.1:2379 --dial-timeout=3s --command-timeout=5s "$@"
}
