# shellcheck shell=bash
# ejabberdctl COMMAND ARGS... (ec_ctl); NO_TIMEOUT 1: without its 60 s time limit.
# params: COMMAND ARGS NO_TIMEOUT
options=()
if [ "$NO_TIMEOUT" = 1 ]; then options+=(--no-timeout); fi
ec_ctl "${options[@]}" "$COMMAND" "${ARGS[@]}"
