# shellcheck shell=bash
# Put replaced files back and start the node. A file's content goes back into the file in
# place, which keeps the owner and mode it was installed with (a backup is root's and 0600:
# `cp -p` would hand those to a file the ejabberd user must read, and the node would not
# start). A directory kept as a tar (the plugin's) replaces what is there now.
# params: RESTORES C2S_PORT START_BOUND
#   RESTORES: BACKUP PATH for each file or directory
set -e
ec_stop || true
set -- "${RESTORES[@]}"
while [ $# -ge 2 ]; do
  case "$1" in
    *.tar) rm -rf "${2:?}/ebin" "${2:?}/src"; tar -C "$2" -xpf "$1" ;;
    *) cat "$1" > "$2" ;;
  esac
  shift 2
done
ec_start "$C2S_PORT" "$START_BOUND"
