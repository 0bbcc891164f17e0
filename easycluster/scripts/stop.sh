# shellcheck shell=bash
# A stop through the unit, waited for.
set -e
ec_stop
