# shellcheck shell=bash
# Record the order stop-cluster stopped the nodes in (RECORD: JSON).
# params: RECORD STOP_ORDER
install -d -m 700 "${STOP_ORDER%/*}" && printf '%s\n' "$RECORD" > "$STOP_ORDER"
