# shellcheck shell=bash
# The start of a node that joins SEED while it boots (the plugin's boot_join): the join
# marker first, then the seed file (EJABBERD_DEFAULT reads it), then the unit's start.
# params: SEED MARKER
#   MARKER: the join marker's JSON
# params: STATE_DIR JOINING EJABBERD_RUN_DIR JOIN_GO JOIN_PROGRESS JOIN_SEED_FILE
set -e
install -d -m 700 "$STATE_DIR"
printf '%s\n' "$MARKER" > "$JOINING"
install -d -o ejabberd -g ejabberd -m 755 "$EJABBERD_RUN_DIR"
rm -f "$JOIN_GO" "$JOIN_PROGRESS"
printf '%s\n' "$SEED" > "$JOIN_SEED_FILE.new" && chmod 644 "$JOIN_SEED_FILE.new" && mv "$JOIN_SEED_FILE.new" "$JOIN_SEED_FILE"
ec_launch
