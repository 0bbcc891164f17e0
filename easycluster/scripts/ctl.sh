# shellcheck shell=bash
# ejabberdctl COMMAND ARGS...; NO_TIMEOUT 1: without ejabberdctl's own time limit.
# params: COMMAND ARGS NO_TIMEOUT
options=()
if [ "$NO_TIMEOUT" = 1 ]; then options+=(--no-timeout); fi
ejabberdctl "${options[@]}" "$COMMAND" "${ARGS[@]}"
