# shellcheck shell=bash
# apt-get install the pinned ejabberd without starting it (policy-rc.d), as on any Debian.
# params: VERSION POLICY_RC_D
set -e
export DEBIAN_FRONTEND=noninteractive
own_policy=0
if [ ! -e "$POLICY_RC_D" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$POLICY_RC_D"; chmod 755 "$POLICY_RC_D"; own_policy=1
fi
trap '[ $own_policy = 1 ] && rm -f "$POLICY_RC_D"' EXIT
new_install=0; dpkg -s ejabberd >/dev/null 2>&1 || new_install=1
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "ejabberd=$VERSION" erlang-dev nftables >/dev/null
# enabled by the package: a node starts at boot only once it is a member (ec_start enables it)
if [ $new_install = 1 ]; then systemctl disable --quiet ejabberd 2>/dev/null; fi
# shellcheck disable=SC2016  # dpkg-query's format, not the shell's
dpkg-query -W -f='${Version}' ejabberd
