#!/bin/bash
# Install the Debian/Ubuntu packages the lab and the toolkit need on this machine,
# only those missing (a re-run costs a few dpkg queries).
set -euo pipefail
# shellcheck: the test that keeps the remote scripts (easycluster/scripts/*.sh) clean.
packages=(debootstrap apt-utils iproute2 util-linux mount systemd-container openssh-client procps python3 python3-venv
          shellcheck)
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
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
