# shellcheck shell=bash
# Install the files uploaded to STAGING (file I is STAGING/I; the plugin's sources in
# STAGING/src, a beam built elsewhere in STAGING/shared.tar): a timestamped backup of each
# file replaced (prints backup=PATH:BACKUP), then each file with its owner and mode, then the
# plugin (the shared beam if this host's packages are the ones it was built with, else compiled
# here: prints built_with= and beam=, a tar in base64), then what the files written need.
# A change that needs a restart leaves RESTART_PENDING until the restart is done.
#
# params: STAGING STAMP RESTART BACKUPS INSTALLS PLUGIN SHARED_BUILT_WITH
#   RESTART: 1 if a restart is needed; BACKUPS: the paths to back up if present (no secrets:
#   no copies of a secret lying in backups); INSTALLS: MODE OWNER GROUP PATH for file 0, 1, ...;
#   PLUGIN: 1 to install the plugin; SHARED_BUILT_WITH: the packages shared.tar was built with
# params: BACKUP_DIR STATE_DIR RESTART_PENDING EPMD_REBIND PLUGIN_DIR PLUGIN_SRC PLUGIN_EBIN
# params: UNIT_DROPIN FIREWALL_UNIT EPMD_DROPIN FIREWALL_RULES HAPROXY_CFG NODE_EXPORTER_DEFAULT METRICS_DIR
set -e
trap 'rm -rf "$STAGING"' EXIT
install -d -m 700 "$BACKUP_DIR" "$STATE_DIR"
if [ "$RESTART" = 1 ] || [ "$PLUGIN" = 1 ]; then touch "$RESTART_PENDING"; fi

for path in "${BACKUPS[@]}"; do
  name=${path#/}
  backup="$BACKUP_DIR/${name//\//_}.$STAMP"
  if [ -f "$path" ]; then cp -p "$path" "$backup"; chmod go= "$backup"; echo "backup=$path:$backup"; fi
done
# The plugin is several modules, its sources beside them (their hash is what the facts read):
# kept whole, as one tar of the directory, so a rollback puts back a plugin that matches itself.
if [ "$PLUGIN" = 1 ] && [ -d "$PLUGIN_EBIN" ]; then
  name=${PLUGIN_DIR#/}
  backup="$BACKUP_DIR/${name//\//_}.$STAMP.tar"
  tar -C "$PLUGIN_DIR" -cf "$backup" ebin src; chmod go= "$backup"; echo "backup=$PLUGIN_DIR:$backup"
fi

reload=0 epmd=0 unit_written=0 rules_written=0 haproxy=0 exporter=0
set -- "${INSTALLS[@]}"
i=0
while [ $# -ge 4 ]; do
  install -D -m "$1" -o "$2" -g "$3" "$STAGING/$i" "$4"
  case "$4" in
    "$UNIT_DROPIN") reload=1 ;;
    "$FIREWALL_UNIT") reload=1 unit_written=1 ;;
    "$EPMD_DROPIN") reload=1 epmd=1 ;;
    "$FIREWALL_RULES") rules_written=1 ;;
    "$HAPROXY_CFG") haproxy=1 ;;
    "$NODE_EXPORTER_DEFAULT") exporter=1 ;;
  esac
  shift 4; i=$((i + 1))
done

if [ "$PLUGIN" = 1 ]; then
  install -d -m 755 "$PLUGIN_SRC" "$PLUGIN_EBIN"
  rm -rf "$STAGING/ebin" && mkdir "$STAGING/ebin"
  if [ -f "$STAGING/shared.tar" ] && [ "$(ec_plugin_built_with)" = "$SHARED_BUILT_WITH" ]; then
    tar -C "$STAGING/ebin" -xf "$STAGING/shared.tar"
  else
    include=$(dpkg -L ejabberd | grep -m1 '/ejabberd-[^/]*/include$')
    xmpp_include=$(dpkg -L erlang-p1-xmpp | grep -m1 '/include/xmpp.hrl$'); xmpp_include=${xmpp_include%/xmpp.hrl}
    # two erlc at once, every other module each: the compile is most of a new cluster's first
    # configure, and its other hosts wait for it (their beams are this one's)
    even=(); odd=()
    for f in "$STAGING"/src/*.erl; do
      if [ ${#even[@]} = ${#odd[@]} ]; then even+=("$f"); else odd+=("$f"); fi
    done
    plugin_erlc() { erlc -I "$include" -I "$xmpp_include" -pa "${include%/include}/ebin" -o "$STAGING/ebin" "$@"; }
    plugin_erlc "${even[@]}" & first=$!
    if [ ${#odd[@]} -gt 0 ]; then plugin_erlc "${odd[@]}" || { wait "$first"; exit 1; }; fi
    wait "$first"
    echo "built_with=$(ec_plugin_built_with)"
    echo "beam=$(tar -C "$STAGING/ebin" -cf - . | base64 -w0)"
  fi
  rm -f "$PLUGIN_SRC"/*.erl "$PLUGIN_EBIN"/*.beam
  install -m 644 "$STAGING"/ebin/*.beam "$PLUGIN_EBIN/"
  install -m 644 "$STAGING"/src/*.erl "$PLUGIN_SRC/"
fi

# enabled before the one reload, which it needs too
if [ $unit_written = 1 ]; then ec_enable --no-reload easycluster-firewall 2>/dev/null; fi
if [ $reload = 1 ]; then systemctl daemon-reload; fi
if [ $epmd = 1 ]; then touch "$EPMD_REBIND"; fi
if [ $rules_written = 1 ]; then nft -f "$FIREWALL_RULES"; fi   # in place, atomically (the table is replaced whole)
if [ $haproxy = 1 ]; then systemctl enable --quiet haproxy; systemctl reload-or-restart haproxy; fi   # sessions kept
if [ $exporter = 1 ]; then   # node-exporter's new settings; on a node, the directory the plugin writes its metrics to
  if id ejabberd >/dev/null 2>&1; then install -d -m 755 -o ejabberd -g ejabberd "$METRICS_DIR"; fi
  ec_exporter_start
fi
