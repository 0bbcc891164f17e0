# shellcheck shell=bash
# Put replaced files back (owner and mode kept by cp -p) and start the node.
# params: RESTORES C2S_PORT START_BOUND
#   RESTORES: BACKUP PATH for each file
set -e
ec_stop || true
set -- "${RESTORES[@]}"
while [ $# -ge 2 ]; do cp -p "$1" "$2"; shift 2; done
ec_start "$C2S_PORT" "$START_BOUND"
