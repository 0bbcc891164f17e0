# shellcheck shell=bash
# A full Mnesia backup to BACKUP, written by the node itself (the plugin); the newest KEEP are
# kept, and SPARE whatever its age. Prints the backup's size.
# params: BACKUP KEEP SPARE MNESIA_BACKUP_DIR
set -e
install -d -o ejabberd -g ejabberd -m 700 "$MNESIA_BACKUP_DIR"
answer=$(ec_ctl --no-timeout easy_cluster_backup "$BACKUP") || { echo "$answer"; exit 1; }
# shellcheck disable=SC2010,SC2012  # names the toolkit made (no newlines), newest first
ls -1t "$MNESIA_BACKUP_DIR"/*.backup | grep -vxF "$SPARE" | tail -n +$((KEEP + 1)) | xargs -r rm -f
stat -c %s "$BACKUP"
