# shellcheck shell=bash
# Take the cluster lock here (mkdir is atomic): prints "acquired", or "held" and the holder.
# params: HOLDER LOCK_DIR LOCK_HOLDER
#   HOLDER: this run's record (JSON)
install -d -m 700 "${LOCK_DIR%/*}"
if mkdir "$LOCK_DIR" 2>/dev/null; then printf '%s\n' "$HOLDER" > "$LOCK_HOLDER"; echo acquired
else echo held; cat "$LOCK_HOLDER" 2>/dev/null; fi
