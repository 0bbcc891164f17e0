# shellcheck shell=bash
# A stop, then a start, through the unit.
# params: C2S_PORT START_BOUND
set -e
ec_stop
ec_start "$C2S_PORT" "$START_BOUND"
