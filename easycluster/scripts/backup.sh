# shellcheck shell=bash
# A full Mnesia backup to BACKUP, written by the node itself (the plugin); the newest KEEP are
# kept, and SPARE whatever its age. Prints "@@ active" as soon as the backup's checkpoint is
# active (the plugin's BACKUP.active exists: the backup holds the cluster as it is at that
# moment, and the cluster may change from then on), "@@ alive" every HEARTBEAT seconds while it
# is written, then the backup's size.
# params: BACKUP KEEP SPARE HEARTBEAT MNESIA_BACKUP_DIR
set -e
install -d -o ejabberd -g ejabberd -m 700 "$MNESIA_BACKUP_DIR"
answer=$(mktemp)
trap 'rm -f "$answer"' EXIT
ec_ctl --no-timeout easy_cluster_backup "$BACKUP" > "$answer" 2>&1 &
writer=$! active=0 ticks=0
while kill -0 "$writer" 2>/dev/null; do
  if [ $active = 0 ] && { [ -e "$BACKUP.active" ] || [ -e "$BACKUP" ]; }; then echo "@@ active"; active=1; fi
  if [ $((ticks % (HEARTBEAT * 20))) = 0 ]; then echo "@@ alive"; fi
  ticks=$((ticks + 1))
  ec_nap 0.05
done
wait "$writer" || { cat "$answer"; exit 1; }
[ $active = 1 ] || echo "@@ active"
# shellcheck disable=SC2010,SC2012  # names the toolkit made (no newlines), newest first
ls -1t "$MNESIA_BACKUP_DIR"/*.backup | grep -vxF "$SPARE" | tail -n +$((KEEP + 1)) | xargs -r rm -f
stat -c %s "$BACKUP"
