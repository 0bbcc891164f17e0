# shellcheck shell=bash
# One poll of a join: "done" or "alive", a line "@@", then the plugin's progress so far.
# The state first: once it says done, the progress read after it is complete.
# params: JOIN_PROGRESS
if grep -q '^result ' "$JOIN_PROGRESS"; then echo 'done'
elif pgrep -u ejabberd -f beam >/dev/null; then echo alive
else echo 'done'; fi
echo '@@'
cat "$JOIN_PROGRESS" 2>/dev/null
