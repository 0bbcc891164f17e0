# shellcheck shell=bash
# The copies of the Mnesia directory full-stop upgrades made here: copy:STAMP=VERSION lines
# (the ejabberd version the node ran when copied), then end=1.
# params: UPGRADE_COPY_DIR
for v in "$UPGRADE_COPY_DIR"/*.version; do
  [ -f "$v" ] || continue
  stamp=${v##*/}; stamp=${stamp%.version}
  [ -f "$UPGRADE_COPY_DIR/$stamp.tar" ] && echo "copy:$stamp=$(head -n 1 "$v")"
done
echo "end=1"
