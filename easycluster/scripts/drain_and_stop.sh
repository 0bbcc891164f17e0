# shellcheck shell=bash
# Close the listeners and every client session (the plugin), then stop through the unit.
# params: DRAIN_SECONDS
set -e
ec_ctl easy_cluster_drain "$DRAIN_SECONDS" >/dev/null 2>&1 || true
ec_stop
