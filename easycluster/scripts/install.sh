# shellcheck shell=bash
# apt-get install the pinned ejabberd without starting it (policy-rc.d), as on any Debian.
# A backport (a version with ~bpo, Debian's convention) is installed from the release's
# backports suite (`-t CODENAME-backports`: its dependencies need the backported versions too).
# Any other version is installed from the release, and the packages a backport brought along
# go back to the release's versions with it (the way back from an upgrade to a backport).
# Modified configuration files are kept (--force-confold: easycluster writes its own after).
# DOWNLOAD_ONLY=1: only fetch the packages into apt's cache (an upgrade, while nodes still run,
# so that its install is local).
# EXTRA: packages installed along (erlang-p1-pgsql: ejabberd's PostgreSQL driver).
# params: VERSION EXTRA DOWNLOAD_ONLY
set -e
export DEBIAN_FRONTEND=noninteractive
ec_policy_rc_d 'exit 101'
new_install=0; dpkg -s ejabberd >/dev/null 2>&1 || new_install=1
# shellcheck source=/dev/null
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
# A host that lost power during an install (an upgrade's) left dpkg interrupted, and every
# apt-get refuses until what it had unpacked is configured ("dpkg was interrupted, you must
# manually run 'dpkg --configure -a'"): done here, under the same policy (nothing is started).
dpkg --configure -a --force-confdef --force-confold >/dev/null
apt-get update -q >/dev/null
opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
if [ "$DOWNLOAD_ONLY" = 1 ]; then opts+=(--download-only); fi
case $VERSION in
  *~bpo*)
    apt-get install "${opts[@]}" -t "$codename-backports" "ejabberd=$VERSION" erlang-dev nftables "${EXTRA[@]}" >/dev/null ;;
  *)
    # shellcheck disable=SC2016  # dpkg-query's format, not the shell's
    mapfile -t bpo < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' |
                       awk '$1 == "ii" && $3 ~ /~bpo/ && $2 != "ejabberd" {print $2}')
    back=()   # those the release has too (a backport's new dependency, only in backports, stays)
    for p in "${bpo[@]}"; do
      if apt-cache madison "$p" | grep -Eq "(/| )$codename(/| )"; then back+=("$p/$codename"); fi
    done
    apt-get install "${opts[@]}" --allow-downgrades "ejabberd=$VERSION" erlang-dev nftables "${EXTRA[@]}" "${back[@]}" >/dev/null ;;
esac
if [ "$DOWNLOAD_ONLY" = 1 ]; then exit 0; fi
# enabled by the package: a node starts at boot only once it is a member (ec_start enables it)
if [ $new_install = 1 ]; then systemctl disable --quiet ejabberd 2>/dev/null; fi
# shellcheck disable=SC2016  # dpkg-query's format, not the shell's
dpkg-query -W -f='${Version}' ejabberd
