# shellcheck shell=bash
# The cluster's role and database on the replicated database's primary (the standbys get them
# by replication): the role's SCRAM verifier from STAGING/verifier (PostgreSQL never sees the
# password). Run on every member: only the primary acts; each notes the password's hash
# (what the facts compare). Prints primary=yes on the primary. STAGING is removed.
# params: STAGING SET_ROLE CREATE_DATABASE DB_NAME DB_USER PASSWORD_SHA256 DB_PASSWORD_SHA256
set -e
trap 'rm -rf "$STAGING"' EXIT
if [ "$SET_ROLE" = 1 ]; then
  install -d -m 700 "${DB_PASSWORD_SHA256%/*}"
  (umask 077; echo "$PASSWORD_SHA256" > "$DB_PASSWORD_SHA256")
fi
[ "$(ec_psql -t -A -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" = t ] || exit 0
echo "primary=yes"
if [ "$SET_ROLE" = 1 ]; then ec_pg_role "$STAGING/verifier" "$DB_USER"; fi
if [ "$CREATE_DATABASE" = 1 ] && [ -z "$(ec_psql -t -A -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
  ec_pg_database "$DB_NAME" "$DB_USER"
fi
