# shellcheck shell=bash
# Give the lock back if this run (TOKEN) holds it.
# params: TOKEN LOCK_DIR LOCK_HOLDER
if grep -qs "$TOKEN" "$LOCK_HOLDER"; then rm -rf "$LOCK_DIR"; else false; fi
