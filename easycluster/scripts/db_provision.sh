# shellcheck shell=bash
# A database host made what the plan says (each step only when asked): PostgreSQL installed
# (Debian's, running under its systemd unit), easycluster's settings (listen address) and
# pg_hba.conf lines (the cluster's nodes only, SCRAM) installed from STAGING, the role with
# the password verifier uploaded to STAGING/verifier (SCRAM: PostgreSQL never sees the
# password itself), the database owned by the role. The verifier goes to psql on stdin,
# never on a command line; the staging directory is removed.
# params: STAGING INSTALL WRITE_CONF WRITE_HBA SET_ROLE CREATE_DATABASE DB_NAME DB_USER PASSWORD_SHA256
# params: PG_CONF_NAME PG_HBA_BEGIN PG_HBA_END DB_PASSWORD_SHA256
set -e
trap 'rm -rf "$STAGING"' EXIT
export DEBIAN_FRONTEND=noninteractive
if [ "$INSTALL" = 1 ]; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends postgresql >/dev/null
fi
read -r ver name _rest <<<"$(pg_lsclusters -h | head -n1)"
[ -n "$ver" ] || { echo "no PostgreSQL cluster on this host (pg_lsclusters)"; exit 1; }
dir=/etc/postgresql/$ver/$name
unit=postgresql@$ver-$name
restart=0 reload=0
if [ "$WRITE_CONF" = 1 ]; then
  install -D -m 644 -o postgres -g postgres "$STAGING/conf" "$dir/$PG_CONF_NAME"; restart=1
fi
if [ "$WRITE_HBA" = 1 ]; then   # our block replaced (or appended), the rest of the file kept
  awk -v b="$PG_HBA_BEGIN" -v e="$PG_HBA_END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' \
    "$dir/pg_hba.conf" > "$STAGING/hba.new"
  cat "$STAGING/hba" >> "$STAGING/hba.new"
  install -m 640 -o postgres -g postgres "$STAGING/hba.new" "$dir/pg_hba.conf"; reload=1
fi
systemctl enable --quiet "$unit" 2>/dev/null || true
if [ "$restart" = 1 ]; then systemctl restart "$unit"
elif ! systemctl is-active --quiet "$unit"; then systemctl start "$unit"
elif [ "$reload" = 1 ]; then systemctl reload "$unit"; fi
for _ in $(seq 100); do runuser -u postgres -- pg_isready -q && break; sleep 0.1; done
if [ "$SET_ROLE" = 1 ]; then
  ec_pg_role "$STAGING/verifier" "$DB_USER"
  install -d -m 700 "${DB_PASSWORD_SHA256%/*}"
  (umask 077; echo "$PASSWORD_SHA256" > "$DB_PASSWORD_SHA256")
fi
if [ "$CREATE_DATABASE" = 1 ]; then ec_pg_database "$DB_NAME" "$DB_USER"; fi
echo "PostgreSQL $ver/$name"
