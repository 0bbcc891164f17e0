# shellcheck shell=bash
# The monitoring host as it is (read-only): which of its packages are installed, whether its
# units run, and easycluster's files there (base64: compared and diffed by the plan).
# params: PACKAGES UNITS FILES
for p in "${PACKAGES[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "package $p yes"
  else
    echo "package $p no"
  fi
done
for u in "${UNITS[@]}"; do
  echo "unit $u $(systemctl is-active "$u" 2>/dev/null || true)"
done
for f in "${FILES[@]}"; do
  if [ -f "$f" ]; then echo "file $f $(base64 -w0 < "$f")"; else echo "file $f -"; fi
done
