"""Every path easycluster uses on a cluster host, in one place.

Python modules import them from here; the remote scripts (easycluster/scripts/*.sh) never
spell a path: the renderer (easycluster.scripts.render) gives each script the paths it
declares as parameters of the same names. Paths that belong to the operating system's
interfaces rather than to ejabberd or easycluster (/etc/os-release, /run/systemd/system,
/dev/tcp/...) are left to the scripts.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- ejabberd's own (Debian's package)
EJABBERD_YML = "/etc/ejabberd/ejabberd.yml"
EJABBERD_DEFAULT = "/etc/default/ejabberd"
MNESIA_DIR = "/var/lib/ejabberd"                 # the ejabberd user's home: Mnesia's files and the cookie
COOKIE_PATH = f"{MNESIA_DIR}/.erlang.cookie"
TRANSLATIONS_CACHE = f"{MNESIA_DIR}/translations.cache"   # built by a node's first start
MNESIA_SCHEMA_FILE = f"{MNESIA_DIR}/ejabberd.schema"   # a satellite's per-table storage types (ejabberd_mnesia)
EJABBERD_RUN_DIR = "/run/ejabberd"
EJABBERD_ERROR_LOG = "/var/log/ejabberd/error.log"

# --------------------------------------------------------------------------- files deploy writes (render.py)
PLUGIN_DIR = "/usr/local/lib/easy_cluster"
PLUGIN_SRC = f"{PLUGIN_DIR}/src"
PLUGIN_EBIN = f"{PLUGIN_DIR}/ebin"
PLUGIN_BEAM = f"{PLUGIN_EBIN}/easy_cluster.beam"
# Present only for a node's first start when it joins at boot: the name of the node to join
# (read by /etc/default/ejabberd; the plugin's boot_join does the join).
JOIN_SEED_FILE = "/etc/ejabberd/easycluster-join-seed"
# Present only for the start after a full-stop upgrade: "all" or the node to wait for (read by
# /etc/default/ejabberd; the plugin's boot_hold holds the start before ejabberd).
UPGRADE_HOLD_FILE = "/etc/ejabberd/easycluster-upgrade-hold"
# easycluster's drop-in for Debian's ejabberd.service (watchdog off, start/stop timeouts, no
# restart after a failed join); a change is followed by `systemctl daemon-reload`.
UNIT_DROPIN = "/etc/systemd/system/ejabberd.service.d/easycluster.conf"
# The host firewall: epmd and the distribution window open to the cluster's members only
# (nftables, a table of easycluster's own), loaded at boot by a unit of ours.
FIREWALL_RULES = "/etc/easycluster/firewall.nft"
FIREWALL_UNIT = "/etc/systemd/system/easycluster-firewall.service"
# easycluster's drop-in for Debian's epmd.socket: epmd bound to the cluster interface and
# loopback. Written, it leaves EPMD_REBIND behind: the next start of the node restarts epmd first.
EPMD_DROPIN = "/etc/systemd/system/epmd.socket.d/easycluster.conf"
# The distribution's TLS (cluster.distribution.tls): this host's share of the toolkit's CA (tls.py)
DIST_TLS_DIR = "/etc/ejabberd/dist-tls"
DIST_TLS_CA = f"{DIST_TLS_DIR}/ca.pem"
DIST_TLS_CERT = f"{DIST_TLS_DIR}/node.pem"
DIST_TLS_KEY = f"{DIST_TLS_DIR}/node.key"
DIST_TLS_OPTFILE = f"{DIST_TLS_DIR}/ssl_dist.conf"

# cluster.database: the sql_* options holding the database password (0400, the ejabberd user's),
# pulled in by ejabberd.yml's include_config_file: ejabberd.yml itself stays diffable.
SQL_SECRET_FILE = "/etc/ejabberd/easycluster-sql.yml"

# --------------------------------------------------------------------------- a database host's (cluster.database.host)
# PostgreSQL's settings of easycluster's (listen address), a file in the cluster's conf.d, and
# its lines in pg_hba.conf (between these two markers): every path under /etc/postgresql/VER/NAME/
PG_CONF_NAME = "conf.d/easycluster.conf"
PG_HBA_BEGIN = "# BEGIN easycluster: the cluster's nodes (managed; edits are overwritten)"
PG_HBA_END = "# END easycluster"
DB_PASSWORD_SHA256 = "/var/lib/easycluster/database-password.sha256"   # which password the role has (root's)
PG_DUMP_DIR = "/var/backups/easycluster-postgresql"   # fab backup's pg_dump files

# --------------------------------------------------------------------------- the replicated database's (cluster.database.hosts)
ETCD_DEFAULT = "/etc/default/etcd"               # etcd's settings (the quorum store, on each member)
PATRONI_CONFIG = "/etc/patroni/config.yml"       # Patroni's (0600 postgres: the replication password)
ETCD_DATA = "/var/lib/etcd/easycluster"          # etcd's data directory (ETCD_DEFAULT's)
# a member joining a running etcd: the initial cluster it is told, for its first start only
# (a runtime drop-in: gone at the next boot, when etcd reads its data directory instead)
ETCD_JOIN_ENV = "/run/easycluster/etcd-join.env"
ETCD_JOIN_DROPIN = "/run/systemd/system/etcd.service.d/easycluster-join.conf"
# the quorum store remade from one member (fab force-database-quorum): for one start only
ETCD_FORCE_DROPIN = "/run/systemd/system/etcd.service.d/easycluster-force.conf"
PG_DATA_ROOT = "/var/lib/postgresql"             # Patroni's data directory: PG_DATA_ROOT/MAJOR/easycluster
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380   # etcd's, on each member's address
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"         # on each node: ejabberd's way to the primary
HAPROXY_PORT = 5433                              # ... on the node's loopback

# --------------------------------------------------------------------------- monitoring (cluster.monitoring)
# On every node and database host: Debian's node-exporter, with easycluster's settings; on a
# node it also serves the plugin's metrics, which the plugin writes into METRICS_DIR.
NODE_EXPORTER_DEFAULT = "/etc/default/prometheus-node-exporter"
NODE_EXPORTER_PORT = 9100
METRICS_DIR = "/var/lib/easycluster-metrics"      # the plugin's easycluster.prom (easy_cluster_metrics): not
                                                  # under STATE_DIR (0700 root), node-exporter reads it
# On the monitoring host: Debian's Prometheus and Alertmanager, with easycluster's files.
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
PROMETHEUS_RULES = "/etc/prometheus/easycluster-rules.yml"
ALERTMANAGER_CONFIG = "/etc/prometheus/alertmanager.yml"
PROMETHEUS_PORT, ALERTMANAGER_PORT = 9090, 9093

# --------------------------------------------------------------------------- the toolkit's own state
STATE_DIR = "/var/lib/easycluster"               # the toolkit's markers on each host
RESTART_PENDING = f"{STATE_DIR}/restart-pending"   # config written, restart not yet done
EPMD_REBIND = f"{STATE_DIR}/epmd-rebind"           # epmd's drop-in written, epmd not yet restarted
JOINING = f"{STATE_DIR}/joining"                   # a join started and not yet verified
STOP_ORDER = f"{STATE_DIR}/stop-order"             # JSON {"order": [node names], "when": ...} (stop-cluster)
DEPARTED = f"{STATE_DIR}/departed"                 # a file per node deliberately taken out, on every host
LOCK_DIR = f"{STATE_DIR}/lock"                     # the cluster lock (lock.py): made with mkdir
LOCK_HOLDER = f"{LOCK_DIR}/holder"                 # who holds it (JSON)
BACKUP_DIR = "/var/backups/easycluster"            # replaced files, a wiped node's Mnesia files
MNESIA_BACKUP_DIR = "/var/backups/easycluster-mnesia"   # written by the ejabberd VM itself
UPGRADE_COPY_DIR = "/var/backups/easycluster-upgrade"   # a full-stop upgrade's copies of the Mnesia directory
# An OS move (fab upgrade to a build of the next Debian release) under way on this host: JSON
# {"from", "to", "since"}, written before its first change, removed once its node is back.
OS_MOVE = f"{STATE_DIR}/os-move"
OS_MOVE_APT = f"{STATE_DIR}/os-move-apt"           # apt's view of the next release, before the move (facts)
OS_MOVE_COPY_DIR = "/var/backups/easycluster-os-move"   # the Mnesia directory, copied before the move
STAGING_TEMPLATE = "/root/.easycluster-XXXXXX"     # mktemp's: where configure's uploads wait
POLICY_RC_D = "/usr/sbin/policy-rc.d"              # keeps apt-get from starting ejabberd (install)
SMOKE_PASSWORD = "/root/.easycluster-smoke-password"   # .TAG: the smoke test users' (SFTP; gone once read)
# .TAG: the smoke test users' password where the node's own user reads it (SFTP, then 0400
# ejabberd; the hidden node that registers them deletes it once read): never on a command line
SMOKE_PASSWORD_NODE = f"{MNESIA_DIR}/.easycluster-smoke-password"

# --------------------------------------------------------------------------- the plugin's files
JOIN_PROGRESS = f"{EJABBERD_RUN_DIR}/easy_cluster_join.log"   # written by the plugin
JOIN_GO = f"{EJABBERD_RUN_DIR}/easy_cluster_join.go"          # a boot join's turn (plugin boot_join)
COOKIE_STAGING = COOKIE_PATH + ".rotate"   # rotate-cookie's new cookie; the plugin reads it from there
HEAL_CARRY = f"{MNESIA_DIR}/easycluster-heal-offline.bin"     # a loser's offline messages (heal)
JOIN_PAUSE = f"{EJABBERD_RUN_DIR}/easy_cluster_join.pause"    # the tests' fault injection: a join waits while it exists
BACKUP_PAUSE = f"{EJABBERD_RUN_DIR}/easy_cluster_backup.pause"   # the tests' too: a backup, its checkpoint active, waits


def all_paths() -> dict[str, str]:
    """Every path above by name: what the renderer may hand a script."""
    return {name: value for name, value in globals().items()
            if name.isupper() and isinstance(value, str) and value.startswith("/")}


def etcd_peer_url(address: str) -> str:
    """How etcd's members reach the member at `address` (its name in etcd's member list)."""
    return f"http://{address}:{ETCD_PEER_PORT}"


def etcd_client_url(address: str) -> str:
    return f"http://{address}:{ETCD_CLIENT_PORT}"


def pg_data_dir(pg_major: str) -> str:
    """Patroni's PostgreSQL data directory on a member of the replicated database."""
    return f"{PG_DATA_ROOT}/{pg_major}/easycluster"
