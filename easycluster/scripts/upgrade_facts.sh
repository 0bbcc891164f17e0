# shellcheck shell=bash
# An upgrade's facts of this host, read-only but for apt's lists: can ejabberd VERSION be
# installed here (apt-get's simulation: which packages change), the space a copy of the
# Mnesia directory needs and the space there is for it; and, where RECORDS=1 (one node), the
# records of the running tables and those VERSION's headers define (its package downloaded
# and unpacked in a scratch directory, removed after), both asked of the running node.
# Prints key=value lines and `tables:`/`records:` JSON lines, then end=1.
# MOVE_TO (a codename, or empty): VERSION is a build of that release, which this host does not
# run yet (an OS move): apt is asked with its sources pointed there (ec_apt_toward: a scratch
# copy; the host's own apt is left as it is), and the simulation is the move's full-upgrade.
# params: VERSION RECORDS MOVE_TO MNESIA_DIR UPGRADE_COPY_DIR STATE_DIR
# shellcheck source=/dev/null
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
ec_apt_toward "$MOVE_TO"
if [ ${#APT_OPTS[@]} -gt 0 ]; then codename=$MOVE_TO; fi
target=()
case $VERSION in *~bpo*) target=(-t "$codename-backports") ;; esac
apt-get "${APT_OPTS[@]}" update -q >/dev/null 2>&1 || echo "apt_update=failed"
if [ ${#APT_OPTS[@]} -gt 0 ]; then
  sim=$(apt-get "${APT_OPTS[@]}" -s -q full-upgrade 2>&1 &&
        apt-get "${APT_OPTS[@]}" -s -q install --no-install-recommends "${target[@]}" "ejabberd=$VERSION" 2>&1)
else
  sim=$(apt-get -s -q install --no-install-recommends "${target[@]}" "ejabberd=$VERSION" 2>&1)
fi
# shellcheck disable=SC2181  # the simulation's status, kept from either branch
if [ $? = 0 ]; then
  echo "installable=yes"
  # Inst lines: "Inst NAME [OLD] (NEW suite [arch])"
  echo "changes=$(awk '$1 == "Inst" && !seen[$2]++ {print $2}' <<<"$sim" | tr '\n' ' ')"
else
  echo "installable=no"
  echo "install_error=$(grep -E '^E:|Depends|Unable' <<<"$sim" | head -n 3 | tr '\n' ' ' | cut -c1-400)"
fi
echo "mnesia_bytes=$(du -sb "$MNESIA_DIR" 2>/dev/null | cut -f1)"
copies=$UPGRADE_COPY_DIR; while [ ! -d "$copies" ]; do copies=$(dirname "$copies"); done
echo "free_bytes=$(df -B1 --output=avail "$copies" | tail -n 1 | tr -d ' ')"
if [ "$RECORDS" = 1 ]; then
  echo "tables:$(ec_ctl easy_cluster_tables 2>&1 | tail -n 1)"
  # not in /tmp: ejabberd.service has a private one (PrivateTmp=true)
  install -d -m 755 "$STATE_DIR"
  scratch=$(mktemp -d "$STATE_DIR/upgrade-headers.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
  chmod 755 "$scratch"   # the node (user ejabberd) reads the headers
  if (cd "$scratch" && apt-get "${APT_OPTS[@]}" download -q "ejabberd=$VERSION" >/dev/null 2>&1) &&
     dpkg-deb -x "$scratch"/ejabberd_*.deb "$scratch/root"; then
    include=$(find "$scratch/root" -type d -path '*/ejabberd-*/include' | head -n 1)
    echo "records:$(ec_ctl easy_cluster_records "$include" 2>&1 | tail -n 1)"
  else
    echo "records_error=could not download ejabberd $VERSION (apt-get download)"
  fi
fi
[ ${#APT_OPTS[@]} -gt 0 ] && rm -rf "$OS_MOVE_APT"
echo "end=1"
