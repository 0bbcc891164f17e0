# shellcheck shell=bash
# The join's marker and files go; a member's unit is enabled (a reboot starts it), a refused
# join's unit is left cleanly inactive.
# params: MEMBER JOINING JOIN_SEED_FILE JOIN_GO
set -e
rm -f "$JOINING" "$JOIN_SEED_FILE" "$JOIN_GO"
if [ "$MEMBER" = 1 ]; then ec_enable ejabberd
else systemctl reset-failed ejabberd 2>/dev/null || true; fi
