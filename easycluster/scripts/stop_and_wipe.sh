# shellcheck shell=bash
# Stop the node and disable it, then empty its Mnesia directory, keeping the cookie; what was
# there is kept in a tarball first (prints tarball=PATH).
# params: JOINING RESTART_PENDING JOIN_SEED_FILE JOIN_GO MNESIA_DIR COOKIE_PATH BACKUP_DIR
set -e
ec_retire
rm -f "$JOINING" "$RESTART_PENDING" "$JOIN_SEED_FILE" "$JOIN_GO"
cd "$MNESIA_DIR"
cookie=${COOKIE_PATH##*/}
if [ -n "$(find . -mindepth 1 -maxdepth 1 ! -name "$cookie" | head -n1)" ]; then
  install -d -m 700 "$BACKUP_DIR"
  tarball=$BACKUP_DIR/mnesia-dir.$(date -u +%Y%m%dT%H%M%SZ).tgz
  tar czf "$tarball" --exclude="./$cookie" . && chmod 600 "$tarball"
  find . -mindepth 1 -maxdepth 1 ! -name "$cookie" -exec rm -rf {} +
  echo "tarball=$tarball"
fi
