# shellcheck shell=bash
# A member taken out of the replicated database (fab remove-database-host), on the member
# itself: Patroni stopped (it stops PostgreSQL) and disabled, then etcd, and both data
# directories removed: the data lives on in the other members, and a member added again later
# joins afresh (etcd refuses a member with an old membership's data). easycluster's
# configuration files stay; `fab deploy` rewrites them if the host is listed again.
# params: ETCD_DATA PG_DATA_ROOT
set -e
systemctl disable --quiet --now patroni 2>/dev/null || systemctl stop patroni
systemctl disable --quiet --now etcd 2>/dev/null || systemctl stop etcd
rm -rf "$ETCD_DATA" "$PG_DATA_ROOT"/*/easycluster
echo "retired"
