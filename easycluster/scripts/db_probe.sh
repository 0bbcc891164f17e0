# shellcheck shell=bash
# Facts of a database host (cluster.database.host), read only, as key=value lines then end=1
# (parsed by database.py): PostgreSQL's package and cluster, easycluster's settings file and
# pg_hba.conf lines (base64), whether the role and database exist, and the hash of the
# password the role was given (never the password).
# params: SERVER DB_NAME DB_USER PG_CONF_NAME PG_HBA_BEGIN PG_HBA_END DB_PASSWORD_SHA256
# shellcheck source=/dev/null
. /etc/os-release 2>/dev/null
echo "os_id=$ID"
echo "os_version=$VERSION_ID"
echo "systemd=$([ -d /run/systemd/system ] && echo yes || echo no)"
echo "addresses=$(hostname -I 2>/dev/null)"
echo "resolve=$(getent ahostsv4 "$SERVER" | awk '{print $1; exit}')"
# shellcheck disable=SC2016  # dpkg-query's format, not the shell's
echo "postgresql=$(dpkg-query -W -f='${Status} ${Version}' postgresql 2>/dev/null | sed -n 's/^install ok installed //p')"
if command -v pg_lsclusters >/dev/null; then
  read -r ver name _port status _rest <<<"$(pg_lsclusters -h 2>/dev/null | head -n1)"
  if [ -n "$ver" ]; then
    echo "cluster=$ver/$name"
    echo "online=$([ "${status%%,*}" = online ] && echo yes || echo no)"
    conf=/etc/postgresql/$ver/$name/$PG_CONF_NAME
    if [ -f "$conf" ]; then echo "conf=$(base64 -w0 < "$conf")"; else echo "conf=-"; fi
    hba=/etc/postgresql/$ver/$name/pg_hba.conf
    echo "hba=$(sed -n "\\|^$PG_HBA_BEGIN\$|,\\|^$PG_HBA_END\$|p" "$hba" 2>/dev/null | base64 -w0)"
    if [ "${status%%,*}" = online ]; then
      q() { runuser -u postgres -- psql -X -q -t -A -d postgres -c "$1" 2>/dev/null; }
      echo "role=$(q "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")"
      echo "database=$(q "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$DB_NAME'")"
    fi
  fi
fi
echo "password_sha256=$(cat "$DB_PASSWORD_SHA256" 2>/dev/null)"
echo "end=1"
