# shellcheck shell=bash
# A member's start (enabled, started through the unit), waited for.
# params: C2S_PORT START_BOUND
set -e
ec_start "$C2S_PORT" "$START_BOUND"
