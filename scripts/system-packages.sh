#!/bin/bash
# Install the Debian/Ubuntu packages the lab and the toolkit need on this machine,
# only those missing (a re-run costs a few dpkg queries).
set -euo pipefail
# (shellcheck is the test that keeps the remote scripts (easycluster/scripts/*.sh) clean.)
# prometheus: its promtool, for the alert rules' tests (`promtool test rules`) and the metrics' format.
packages=(debootstrap apt-utils iproute2 util-linux mount systemd-container openssh-client procps python3 python3-venv
          shellcheck prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing packages ${missing[*]}: run as root (sudo make ...) or apt-get install them" >&2
  exit 1
fi
echo "installing ${missing[*]}"
apt-get update -q
# prometheus without its recommends: only its promtool is wanted here, not node-exporter and the rest
others=()
for p in "${missing[@]}"; do [ "$p" = prometheus ] || others+=("$p"); done
[ ${#others[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${others[@]}"
[ ${#others[@]} -eq ${#missing[@]} ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
