# shellcheck shell=bash
# The way back from a full-stop upgrade, on a stopped node with the old package installed
# again: its Mnesia directory as the upgrade copied it (UPGRADE_COPY_DIR/STAMP.tar), the
# directory's present contents kept in a tarball first. Prints kept=PATH.
# params: STAMP MNESIA_DIR UPGRADE_COPY_DIR
set -e
copy=$UPGRADE_COPY_DIR/$STAMP.tar
[ -f "$copy" ] || { echo "no copy $copy on this host"; exit 1; }
if pgrep -u ejabberd -f beam >/dev/null; then echo "ejabberd runs: stop it first"; exit 1; fi
kept=$UPGRADE_COPY_DIR/$STAMP.replaced-$(date -u +%Y%m%dT%H%M%SZ).tar
tar -C "$MNESIA_DIR" -cf "$kept" . && chmod 600 "$kept"
find "$MNESIA_DIR" -mindepth 1 -maxdepth 1 ! -name .erlang.cookie -exec rm -rf {} +
tar -C "$MNESIA_DIR" -xpf "$copy" --exclude=./.erlang.cookie
chown -R ejabberd:ejabberd "$MNESIA_DIR"
echo "kept=$kept"
