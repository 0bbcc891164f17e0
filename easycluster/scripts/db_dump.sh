# shellcheck shell=bash
# A pg_dump of the cluster's database (custom format: pg_restore reads it), taken on the
# database host as PostgreSQL's own superuser, into PG_DUMP_DIR (0700, postgres'); the newest
# KEEP are kept. Prints the dump's size.
# params: DB_NAME DUMP KEEP PG_DUMP_DIR
set -e
install -d -o postgres -g postgres -m 700 "$PG_DUMP_DIR"
runuser -u postgres -- pg_dump --format=custom --dbname="$DB_NAME" --file="$DUMP"
# shellcheck disable=SC2010,SC2012  # names the toolkit made (no newlines), newest first
ls -1t "$PG_DUMP_DIR"/*.dump | tail -n +$((KEEP + 1)) | xargs -r rm -f
stat -c %s "$DUMP"
