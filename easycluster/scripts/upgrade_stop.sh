# shellcheck shell=bash
# One node's part of an upgrade's stop: through the unit, waited for; then, with COLD_COPY=1, a
# copy of its Mnesia directory as it stands stopped (every file consistent: the way back of
# a full-stop upgrade), in UPGRADE_COPY_DIR/STAMP.tar, root's only, next to the version it
# was made with. Prints copy=PATH.
# params: COLD_COPY STAMP MNESIA_DIR UPGRADE_COPY_DIR
set -e
ec_stop
if [ "$COLD_COPY" = 1 ]; then
  install -d -m 700 "$UPGRADE_COPY_DIR"
  copy=$UPGRADE_COPY_DIR/$STAMP.tar
  tar -C "$MNESIA_DIR" -cf "$copy.tmp" .
  chmod 600 "$copy.tmp" && mv "$copy.tmp" "$copy"
  # shellcheck disable=SC2016  # dpkg-query's format, not the shell's
  dpkg-query -W -f='${Version}\n' ejabberd > "$UPGRADE_COPY_DIR/$STAMP.version"
  echo "copy=$copy"
fi
