# shellcheck shell=bash
# The quorum store remade from this member alone (fab force-database-quorum), when the others
# are lost for good: etcd started once with ETCD_FORCE_NEW_CLUSTER (a runtime drop-in, removed
# at once: every start with it would drop the members again), keeping its data (Patroni's keys).
# Prints the members etcd then lists (this one).
# params: ETCD_FORCE_DROPIN
set -e
systemctl stop etcd
install -d -m 755 "${ETCD_FORCE_DROPIN%/*}"
printf '[Service]\nEnvironment=ETCD_FORCE_NEW_CLUSTER=true\n' > "$ETCD_FORCE_DROPIN"
systemctl daemon-reload
trap 'rm -f "$ETCD_FORCE_DROPIN"; systemctl daemon-reload' EXIT
timeout 120 systemctl start etcd
ec_etcdctl endpoint health >/dev/null
ec_etcdctl member list -w simple | awk -F', ' '{printf "%s%s", (n++ ? ", " : ""), $3} END {print ""}'
