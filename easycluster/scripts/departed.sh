# shellcheck shell=bash
# Record that NODE left the cluster on purpose (HOW: removed or forgotten, WHEN), or with
# HOW empty, forget that it did.
# params: NODE HOW WHEN DEPARTED
entry=$DEPARTED/$NODE
if [ -n "$HOW" ]; then
  install -d -m 700 "$DEPARTED" && printf '%s %s\n' "$HOW" "$WHEN" > "$entry"
else
  rm -f "$entry"
fi
