# shellcheck shell=bash
# Facts: read-only probes of this host, printed as key=value lines (file contents in base64;
# the cookie and other secret files only as their hash), then end=1. Parsed by facts.py.
# params: FILES SECRETS RESOLVE PEERS PORTS CTL_MODE PROBE_SECONDS
#   FILES: files read whole; SECRETS: files hashed; RESOLVE: host names to resolve; PEERS x
#   PORTS: TCP ports tried (all at once, for at most PROBE_SECONDS); CTL_MODE: how the node's
#   status is read: self (its own ejabberdctl call), cluster (every member's, from this node)
#   or none (read from another node)
# params: COOKIE_PATH PLUGIN_SRC PLUGIN_BEAM MNESIA_DIR RESTART_PENDING JOINING STOP_ORDER DEPARTED OS_MOVE
# shellcheck source=/dev/null
. /etc/os-release 2>/dev/null
echo "os_id=$ID"
echo "os_version=$VERSION_ID"
echo "os_codename=$VERSION_CODENAME"
echo "hostname=$(hostname)"
echo "addresses=$(hostname -I 2>/dev/null)"
# shellcheck disable=SC2016  # dpkg-query's format, not the shell's
echo "ejabberd_version=$(dpkg-query -W -f='${Status} ${Version}' ejabberd 2>/dev/null | sed -n 's/^install ok installed //p')"
# shellcheck disable=SC2016
echo "erlang_version=$(dpkg-query -W -f='${Status} ${Version}' erlang-base 2>/dev/null | sed -n 's/^install ok installed //p')"
# shellcheck disable=SC2016
echo "pgsql_driver=$(dpkg-query -W -f='${Status} ${Version}' erlang-p1-pgsql 2>/dev/null | sed -n 's/^install ok installed //p')"
echo "pg_client=$(command -v pg_dump >/dev/null && echo yes || echo no)"
echo "haproxy=$(command -v haproxy >/dev/null && echo yes || echo no)"
echo "node_exporter=$(command -v prometheus-node-exporter >/dev/null && echo yes || echo no)"
echo "systemd=$([ -d /run/systemd/system ] && echo yes || echo no)"
echo "nft=$([ -x /usr/sbin/nft ] && echo yes || echo no)"
if [ -d /run/systemd/system ]; then
  unit=$(systemctl show ejabberd -p LoadState -p ActiveState -p SubState -p Result -p NRestarts -p UnitFileState 2>/dev/null | tr '\n' ' ')
  echo "unit=$unit"
  # NRestarts counts systemd's restarts since the unit was last started by hand, which may be
  # weeks ago: how long ago it last started ejabberd tells a restart loop from old crashes.
  # Seconds, from that start's monotonic stamp and the uptime (both count from boot).
  started=$(systemctl show ejabberd -p ExecMainStartTimestampMonotonic --value 2>/dev/null)
  case $started in ''|*[!0-9]*) started=0 ;; esac
  echo "unit_started_ago=$(awk -v us="$started" 'us > 0 {a = $1 - us / 1e6; printf "%d", (a < 0 ? 0 : a)}' /proc/uptime 2>/dev/null)"
  case " $unit" in *" LoadState=loaded "*)
    case " $unit" in *" ActiveState=active "*" SubState=running "*|*" SubState=running "*" ActiveState=active "*) ;; *)
      echo "journal=$(journalctl -u ejabberd -n 6 --no-pager -o short-iso 2>/dev/null | base64 -w0)" ;; esac ;;
  esac
fi
beam_node=$(pgrep -o -u ejabberd -a -f beam 2>/dev/null | grep -o -- '-s\{0,1\}name [^ ]*' | head -n1 | cut -d' ' -f2)
echo "beam_node=$beam_node"
for f in "${FILES[@]}"; do
  if [ -f "$f" ]; then echo "file:$f=$(base64 -w0 < "$f")"; else echo "file:$f=-"; fi
done
echo "cookie_sha256=$([ -f "$COOKIE_PATH" ] && sha256sum < "$COOKIE_PATH" | cut -c1-64)"
for f in "${SECRETS[@]}"; do echo "secret:$f=$([ -f "$f" ] && sha256sum < "$f" | cut -c1-64)"; done
echo "plugin_sha256=$([ -f "$PLUGIN_BEAM" ] && [ -f "$PLUGIN_SRC/easy_cluster.erl" ] && cat "$PLUGIN_SRC"/*.erl | sha256sum | cut -c1-64)"
echo "mnesia_schema=$([ -f "$MNESIA_DIR/schema.DAT" ] && echo yes || echo no)"
echo "restart_pending=$([ -f "$RESTART_PENDING" ] && echo yes || echo no)"
[ -f "$JOINING" ] && echo "joining=$(head -c 500 "$JOINING")"
[ -f "$OS_MOVE" ] && echo "os_move=$(head -c 300 "$OS_MOVE")"
[ -f "$STOP_ORDER" ] && echo "stop_order=$(head -c 2000 "$STOP_ORDER")"
for d in "$DEPARTED"/*; do [ -f "$d" ] && echo "departed:${d##*/}=$(head -c 200 "$d")"; done
for h in "${RESOLVE[@]}"; do echo "resolve:$h=$(getent ahostsv4 "$h" | awk '{print $1; exit}')"; done
probe() {  # host port, in a subshell of its own -> reach:host:port=open | refused | unreachable | timeout
  # bash connects itself (/dev/tcp): no process started per probe (a `timeout` and a `bash` for
  # each of ~33 probes were most of this script's CPU, on hosts whose cores a run shares)
  local err rc
  err=$({ exec 3<>"/dev/tcp/$1/$2"; } 2>&1) && { echo "reach:$1:$2=open"; return; }
  rc=$?
  if [ $rc -gt 128 ]; then echo "reach:$1:$2=timeout"   # neither answered nor refused: cut short by the timer
  else case $err in *refused*) echo "reach:$1:$2=refused" ;; *) echo "reach:$1:$2=unreachable" ;; esac; fi
}
probes=()
for h in "${PEERS[@]}"; do for p in "${PORTS[@]}"; do probe "$h" "$p" & probes+=($!); done; done
if [ ${#probes[@]} -gt 0 ]; then
  # after PROBE_SECONDS, the connections still waiting (a firewall dropping them) are cut short
  ( exec >/dev/null 2>&1; sleep "$PROBE_SECONDS" & s=$!; trap 'kill $s; exit 0' TERM; wait $s
    pkill -P "$(IFS=,; echo "${probes[*]}")" ) &
  timer=$!
  wait "${probes[@]}"
  kill "$timer" 2>/dev/null
fi
if command -v ejabberdctl >/dev/null; then
  # no VM, no node: skip the calls into it (ec_ctl; each would only find no node to answer)
  if pgrep -u ejabberd -f beam >/dev/null; then beam=yes; else beam=no; fi
  if [ $beam = no ]; then echo "ctl_status=3"
  elif [ "$CTL_MODE" = cluster ]; then   # every member's status, from this node (gather_via)
    st=$(ec_ctl easy_cluster_statuses 2>/dev/null) && echo "cluster_statuses=$(echo "$st" | tr -d '\n')"
  elif [ "$CTL_MODE" = none ]; then :    # asked from another node (gather_via)
  else
    st=$(ec_ctl easy_cluster_status 2>/dev/null); rc=$?
    if [ $rc = 0 ]; then echo "ctl_status=0"; echo "cluster_status=$(echo "$st" | tr -d '\n')"
    else ec_ctl status >/dev/null 2>&1; echo "ctl_status=$?"; fi
  fi
  echo "beam_running=$beam"
fi
echo "end=1"
