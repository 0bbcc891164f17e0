# shellcheck shell=bash
# A member of the replicated database made what the plan says (each part only when asked):
# PostgreSQL, Patroni and etcd installed (Debian's; no cluster of Debian's own: Patroni makes
# and owns the only one), easycluster's etcd settings and Patroni's configuration installed
# from STAGING (etcd, patroni: the latter 0600, the postgres user's), the member's firewall
# (fw_unit, fw_rules: applied at once), and both units enabled and
# (re)started without waiting: etcd's first start waits for its peers, which the other members
# start at the same time. The caller waits for the quorum and the primary. STAGING is removed.
# START=0: a member joining a running quorum store: its units start in replica_join.sh. A
# member holding etcd's data is not restarted for a change of the ETCD_INITIAL_ settings
# alone (a membership change): etcd reads them at a member's first start only.
# params: STAGING INSTALL WRITE_ETCD WRITE_PATRONI WRITE_FIREWALL START ETCD_DEFAULT PATRONI_CONFIG
# params: FIREWALL_UNIT FIREWALL_RULES ETCD_DATA
set -e
trap 'rm -rf "$STAGING"' EXIT
export DEBIAN_FRONTEND=noninteractive
if [ "$INSTALL" = 1 ]; then
  install -d /etc/postgresql-common/createcluster.d
  printf '# easycluster: Patroni makes and owns the only PostgreSQL cluster of this host\ncreate_main_cluster = false\n' \
    > /etc/postgresql-common/createcluster.d/easycluster.conf
  apt-get update -q >/dev/null
  # python3-etcd by name: patroni's dependency on a store client is also met by python3-consul
  apt-get install -y -q --no-install-recommends postgresql patroni python3-etcd etcd-server etcd-client \
    nftables >/dev/null
fi
if [ "$WRITE_FIREWALL" = 1 ]; then   # first: etcd, Patroni and PostgreSQL start behind it
  if [ -f "$STAGING/fw_unit" ]; then
    install -m 644 "$STAGING/fw_unit" "$FIREWALL_UNIT"
    systemctl daemon-reload; systemctl enable --quiet easycluster-firewall
  fi
  if [ -f "$STAGING/fw_rules" ]; then
    install -D -m 644 "$STAGING/fw_rules" "$FIREWALL_RULES"
    nft -f "$FIREWALL_RULES"   # in place, atomically (the table is replaced whole)
  fi
fi
lasting() { grep -v '^ETCD_INITIAL_' "$1" 2>/dev/null; }
if [ "$WRITE_ETCD" = 1 ]; then
  restart=1
  if [ -d "$ETCD_DATA/member" ] && [ "$(lasting "$ETCD_DEFAULT")" = "$(lasting "$STAGING/etcd")" ]; then
    restart=0
  fi
  install -m 644 -o root -g root "$STAGING/etcd" "$ETCD_DEFAULT"
  if [ "$START" = 1 ]; then
    systemctl enable --quiet etcd
    if [ "$restart" = 1 ]; then systemctl restart --no-block etcd; fi
  fi
fi
if [ "$START" = 1 ] && ! systemctl is-active --quiet etcd; then
  systemctl start --no-block etcd
fi
if [ "$WRITE_PATRONI" = 1 ]; then
  install -d -m 755 "${PATRONI_CONFIG%/*}"
  install -m 600 -o postgres -g postgres "$STAGING/patroni" "$PATRONI_CONFIG"
  if [ "$START" = 1 ]; then
    systemctl enable --quiet patroni
    if systemctl is-active --quiet patroni; then systemctl reload patroni; else systemctl start --no-block patroni; fi
  fi
elif [ "$START" = 1 ] && ! systemctl is-active --quiet patroni; then
  systemctl start --no-block patroni
fi
echo "provisioned"
