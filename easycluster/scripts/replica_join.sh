# shellcheck shell=bash
# A member joins the replicated database's running quorum store: added to etcd by the running
# members (ENDPOINTS: their client URLs), unless an earlier attempt did, then started with the
# initial cluster etcd lists (a runtime drop-in: read at this first start only; the data
# directory rules afterwards), then Patroni started: it copies the primary and follows it. Any
# etcd data already here is of a membership that ended: it is removed first. Prints the
# members' names on its last line.
# params: MEMBER PEER_URL ENDPOINTS ETCD_DATA ETCD_JOIN_ENV ETCD_JOIN_DROPIN
set -e
ctl() { ETCDCTL_API=3 timeout 30 etcdctl --endpoints="$ENDPOINTS" --dial-timeout=3s --command-timeout=10s "$@"; }
# etcdctl's simple listing: ID, status, name, peer URLs, client URLs, is learner
listed=$(ctl member list -w simple)
if ! printf '%s\n' "$listed" | awk -F', ' -v url="$PEER_URL" '$4 == url {found=1} END {exit !found}'; then
  # etcd refuses a member while one started less than 5 s ago ("unhealthy cluster"): the one
  # that joined before this one; tried again for up to a minute
  tries=0
  until added=$(ctl member add "$MEMBER" --peer-urls="$PEER_URL" 2>&1); do
    tries=$((tries + 1))
    if [ "$tries" -ge 20 ]; then echo "$added" >&2; exit 1; fi
    sleep 3
  done
  listed=$(ctl member list -w simple)
fi
initial=$(printf '%s\n' "$listed" | awk -F', ' -v me="$MEMBER" -v url="$PEER_URL" '
  NF >= 4 { name = ($4 == url) ? me : $3; printf "%s%s=%s", (n++ ? "," : ""), name, $4 }')
systemctl stop etcd
rm -rf "$ETCD_DATA"
install -d -m 755 "${ETCD_JOIN_ENV%/*}" "${ETCD_JOIN_DROPIN%/*}"
printf 'ETCD_INITIAL_CLUSTER="%s"\nETCD_INITIAL_CLUSTER_STATE="existing"\n' "$initial" > "$ETCD_JOIN_ENV"
printf '[Service]\nEnvironmentFile=%s\n' "$ETCD_JOIN_ENV" > "$ETCD_JOIN_DROPIN"
systemctl daemon-reload
systemctl enable --quiet etcd
timeout 120 systemctl start etcd   # Type=notify: back once it joined and serves
rm -f "$ETCD_JOIN_DROPIN" "$ETCD_JOIN_ENV"
systemctl daemon-reload
ec_etcdctl endpoint health >/dev/null
systemctl enable --quiet patroni
systemctl restart --no-block patroni
ec_etcdctl member list -w simple | awk -F', ' '{printf "%s%s", (n++ ? ", " : ""), $3} END {print ""}'
