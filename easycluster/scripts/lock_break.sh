# shellcheck shell=bash
# Remove the lock, whoever holds it: prints the holder, then "removed".
# params: LOCK_DIR LOCK_HOLDER
if [ -d "$LOCK_DIR" ]; then cat "$LOCK_HOLDER" 2>/dev/null; echo; rm -rf "$LOCK_DIR"; echo removed; fi
