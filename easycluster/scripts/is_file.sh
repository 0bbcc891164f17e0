# shellcheck shell=bash
# Succeeds if FILE is a file on this host.
# params: FILE
test -f "$FILE"
