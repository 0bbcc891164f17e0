# shellcheck shell=bash
# A pg_dump of the cluster's database (custom format: pg_restore reads it) into PG_DUMP_DIR
# (0700); the newest KEEP are kept. Prints the dump's size.
# On the database host easycluster provisions (PGPASS "-"): as PostgreSQL's own superuser.
# On a node, for an external server: as the cluster's role, logging in with the password file
# uploaded (SFTP) to PGPASS (a .pgpass line), which goes as soon as pg_dump is done.
# params: DB_NAME DUMP KEEP PGPASS SERVER PORT DB_USER PG_DUMP_DIR
set -e
if [ "$PGPASS" = - ]; then
  install -d -o postgres -g postgres -m 700 "$PG_DUMP_DIR"
  runuser -u postgres -- pg_dump --format=custom --dbname="$DB_NAME" --file="$DUMP"
else
  trap 'rm -f "$PGPASS"' EXIT
  install -d -m 700 "$PG_DUMP_DIR"
  PGPASSFILE=$PGPASS pg_dump --format=custom --no-password --host="$SERVER" --port="$PORT" \
    --username="$DB_USER" --dbname="$DB_NAME" --file="$DUMP"
fi
# shellcheck disable=SC2010,SC2012  # names the toolkit made (no newlines), newest first
ls -1t "$PG_DUMP_DIR"/*.dump | tail -n +$((KEEP + 1)) | xargs -r rm -f
stat -c %s "$DUMP"
