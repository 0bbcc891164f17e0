# shellcheck shell=bash
# The quorum store forgets a member (fab remove-database-host), asked on a member that stays:
# etcd member remove MEMBER_ID (hexadecimal) unless it is gone already. Prints the members left.
# params: MEMBER_ID
set -e
if ec_etcdctl member list -w simple | awk -F', ' -v id="$MEMBER_ID" '$1 == id {found=1} END {exit !found}'; then
  ec_etcdctl member remove "$MEMBER_ID" >/dev/null
fi
ec_etcdctl member list -w simple | awk -F', ' '{printf "%s%s", (n++ ? ", " : ""), $3} END {print ""}'
