# shellcheck shell=bash
# Debian's Prometheus, Alertmanager and node-exporter on the monitoring host (each starts with
# Debian's settings; easycluster's files come next, then monitor_apply.sh).
# params: PACKAGES
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "installed"
