# shellcheck shell=bash
# A full-stop upgrade's way back, on a node already stopped (drained and stopped through its
# unit): a copy of its Mnesia directory as it stands (every file consistent), in
# UPGRADE_COPY_DIR/STAMP.tar, root's only, next to the ejabberd version it was made with.
# Prints copy=PATH.
# params: STAMP MNESIA_DIR UPGRADE_COPY_DIR
set -e
if pgrep -u ejabberd -f beam >/dev/null; then echo "ejabberd runs: it must be stopped first"; exit 1; fi
install -d -m 700 "$UPGRADE_COPY_DIR"
copy=$UPGRADE_COPY_DIR/$STAMP.tar
tar -C "$MNESIA_DIR" -cf "$copy.tmp" .
chmod 600 "$copy.tmp" && mv "$copy.tmp" "$copy"
# shellcheck disable=SC2016  # dpkg-query's format, not the shell's
dpkg-query -W -f='${Version}\n' ejabberd > "$UPGRADE_COPY_DIR/$STAMP.version"
echo "copy=$copy"
