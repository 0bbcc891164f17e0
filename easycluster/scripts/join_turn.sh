# shellcheck shell=bash
# Give a node waiting in boot_join its turn.
# params: JOIN_GO
set -e
touch "$JOIN_GO"
