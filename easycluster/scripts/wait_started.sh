# shellcheck shell=bash
# Wait for a node already launched to report started; it runs the configuration it was
# launched with, so no restart is pending any more.
# params: C2S_PORT START_BOUND RESTART_PENDING
set -e
ec_wait_started "$C2S_PORT" "$START_BOUND" && rm -f "$RESTART_PENDING"
