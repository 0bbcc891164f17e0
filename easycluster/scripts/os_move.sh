# shellcheck shell=bash
# One host's move to the next Debian release (fab upgrade), its node already drained and
# stopped through its unit. Resumable: a move cut off anywhere (SSH lost, power cut) is taken
# up again by running this again.
#  1. the marker OS_MOVE (what moves, since when), and the node disabled: a host that boots
#     in the middle of its move does not start a node on half-upgraded packages;
#  2. a copy of the Mnesia directory, outside /tmp (a tmpfs on Debian 13 after the reboot);
#  3. dpkg and apt finish what a cut-off run left (`dpkg --configure -a`, `apt-get -f install`
#     once the sources name the new release);
#  4. apt's sources pointed at the new release (its suites, backports and security updates);
#  5. openssh-server first (the old release's latest, then the new one's), restarted by its package (Debian 13's release notes, bug #1110030:
#     new SSH connections fail for the rest of the upgrade without it);
#  6. the full upgrade, non-interactive, keeping configuration files as they are
#     (--force-confold: easycluster's own are written again after); ejabberd is not started
#     by any package (policy-rc.d refuses ejabberd alone; sshd must restart);
#  7. the pinned build of ejabberd (and what comes with it), then the node enabled again: the
#     reboot that follows starts it.
# Prints copy=PATH and version=VERSION. The reboot is the caller's (reboot.sh).
# params: FROM_RELEASE TO_RELEASE VERSION EXTRA STAMP OS_MOVE OS_MOVE_COPY_DIR MNESIA_DIR
set -e
export DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none NEEDRESTART_MODE=a
if pgrep -u ejabberd -f beam >/dev/null; then echo "ejabberd runs: it must be stopped first"; exit 1; fi
install -d -m 700 "${OS_MOVE%/*}"
[ -f "$OS_MOVE" ] || printf '{"from": "%s", "to": "%s", "since": "%s"}\n' "$FROM_RELEASE" "$TO_RELEASE" "$STAMP" > "$OS_MOVE"
systemctl disable --quiet ejabberd 2>/dev/null || true
install -d -m 700 "$OS_MOVE_COPY_DIR"
copy=$OS_MOVE_COPY_DIR/$STAMP.tar
if [ ! -f "$copy" ]; then
  tar -C "$MNESIA_DIR" -cf "$copy.tmp" . && chmod 600 "$copy.tmp" && mv "$copy.tmp" "$copy"
fi
echo "copy=$copy"
# shellcheck disable=SC2016  # the policy's own $1
ec_policy_rc_d 'case "$1" in ejabberd|ejabberd.service) exit 101 ;; esac
exit 0'
opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
# a run cut off in the middle of dpkg: what can be configured is; the rest is apt's (-f below)
dpkg --configure -a --force-confdef --force-confold >/dev/null 2>&1 || echo "dpkg: a cut-off run left packages to fix"
# shellcheck source=/dev/null
if [ "$(. /etc/os-release && echo "$VERSION_CODENAME")" = "$FROM_RELEASE" ] &&
   ! grep -rqsw "$TO_RELEASE" /etc/apt/sources.list /etc/apt/sources.list.d/; then   # FROM's own fix first
  apt-get update -q >/dev/null && apt-get install "${opts[@]}" --only-upgrade openssh-server >/dev/null
fi
ec_sources_toward "$FROM_RELEASE" "$TO_RELEASE"
apt-get update -q >/dev/null
apt-get install "${opts[@]}" -f >/dev/null        # a cut-off run's half-installed packages, completed
dpkg --configure -a --force-confdef --force-confold >/dev/null
apt-get install "${opts[@]}" --only-upgrade openssh-server >/dev/null
apt-get full-upgrade "${opts[@]}" >/dev/null
target=()
case $VERSION in *~bpo*) target=(-t "$TO_RELEASE-backports") ;; esac
apt-get install "${opts[@]}" --no-install-recommends "${target[@]}" "ejabberd=$VERSION" erlang-dev nftables "${EXTRA[@]}" >/dev/null
systemctl enable --quiet ejabberd
# shellcheck disable=SC2016  # dpkg-query's format, not the shell's
echo "version=$(dpkg-query -W -f='${Version}' ejabberd)"
# shellcheck source=/dev/null
echo "release=$(. /etc/os-release && echo "$VERSION_CODENAME")"
