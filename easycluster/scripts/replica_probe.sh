# shellcheck shell=bash
# Facts of a member of the replicated database (cluster.database.hosts), read only, as
# key=value lines then end=1 (parsed by facts.parse_replica_facts): the packages, easycluster's
# etcd settings (base64) and the hash of Patroni's configuration (it holds a password), the
# units, what the host's inventory name resolves to there, the replicated cluster as Patroni
# lists it (JSON), etcd's members as this member's etcd lists them (JSON; only once it holds
# easycluster's data, a package's first start running a single-member etcd of its own, and only
# while etcd has its majority), and on the
# primary the role and database.
# params: MEMBER DB_NAME DB_USER DB_PASSWORD_SHA256 ETCD_DEFAULT PATRONI_CONFIG FIREWALL_UNIT FIREWALL_RULES
# params: ETCD_DATA
# shellcheck source=/dev/null
. /etc/os-release 2>/dev/null
echo "os_id=$ID"
echo "os_version=$VERSION_ID"
echo "systemd=$([ -d /run/systemd/system ] && echo yes || echo no)"
echo "addresses=$(hostname -I 2>/dev/null)"
echo "resolve=$(getent ahostsv4 "$MEMBER" | awk '{print $1; exit}')"
# shellcheck disable=SC2016  # dpkg-query's format, not the shell's
for p in postgresql patroni etcd-server python3-etcd nftables; do
  echo "pkg_$p=$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null | sed -n 's/^install ok installed //p')"
done
echo "debian_clusters=$(pg_lsclusters -h 2>/dev/null | awk '{printf "%s/%s ", $1, $2}')"
if [ -f "$ETCD_DEFAULT" ] && grep -q easycluster "$ETCD_DEFAULT"; then echo "etcd_conf=$(base64 -w0 < "$ETCD_DEFAULT")"; else echo "etcd_conf=-"; fi
echo "patroni_sha256=$(sha256sum "$PATRONI_CONFIG" 2>/dev/null | cut -d' ' -f1)"
for f in "$FIREWALL_UNIT" "$FIREWALL_RULES"; do
  if [ -f "$f" ]; then echo "file:$f=$(base64 -w0 < "$f")"; else echo "file:$f=-"; fi
done
echo "etcd_active=$(systemctl is-active etcd 2>/dev/null)"
echo "patroni_active=$(systemctl is-active patroni 2>/dev/null)"
if [ -d "$ETCD_DATA/member" ]; then
  echo "etcd_data=yes"
  # endpoint health is a read that needs etcd's majority (member list may be answered without,
  # from the member's own view: etcd 3.4): the members are listed only with the majority
  if ec_etcdctl endpoint health >/dev/null 2>&1; then
    echo "etcd_members=$(ec_etcdctl member list -w json 2>/dev/null | tr -d '\n')"
  fi
else
  echo "etcd_data=no"
fi
if [ -f "$PATRONI_CONFIG" ] && command -v patronictl >/dev/null; then
  echo "members=$(timeout 10 patronictl -c "$PATRONI_CONFIG" list -f json 2>/dev/null | tr -d '\n')"
fi
if [ "$(runuser -u postgres -- psql -X -q -t -A -d postgres -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" = t ]; then
  q() { runuser -u postgres -- psql -X -q -t -A -d postgres -c "$1" 2>/dev/null; }
  echo "primary=yes"
  echo "role=$(q "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")"
  echo "database=$(q "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$DB_NAME'")"
fi
echo "password_sha256=$(cat "$DB_PASSWORD_SHA256" 2>/dev/null)"
echo "end=1"
