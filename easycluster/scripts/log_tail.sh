# shellcheck shell=bash
# The unit's state, the journal's last lines and error.log's tail.
set -e
ec_log_tail
