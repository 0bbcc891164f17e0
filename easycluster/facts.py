"""Facts: what the read-only probes report of each host (easycluster.probe runs them, one SSH
command per host, all hosts at once), as data.

A probe script prints `key=value` lines (file contents base64-encoded); parsing them is pure
and tested without hosts. The cookie is never read back, only its hash. The database's facts
are here too: its host's (db_probe.sh) and the database as each node sees it (database.py).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from . import releases
from .paths import etcd_peer_url


@dataclass
class HostFacts:
    host: str
    error: str | None = None            # SSH failed: nothing else is known
    os_id: str = ""
    os_version: str = ""
    os_codename: str = ""
    hostname: str = ""
    addresses: list[str] = field(default_factory=list)
    ejabberd_version: str | None = None   # installed package version
    erlang_version: str | None = None
    pgsql_driver: str | None = None      # erlang-p1-pgsql's version (ejabberd's PostgreSQL driver)
    pg_client: bool = False              # PostgreSQL's client tools (pg_dump), for an external database
    haproxy: bool = False                # HAProxy, for a replicated database
    node_exporter: bool = False          # Debian's prometheus-node-exporter (cluster.monitoring)
    systemd: bool = False
    nft: bool = False                   # nftables installed (the firewall of epmd and the distribution)
    unit: dict[str, str] = field(default_factory=dict)   # ejabberd.service: LoadState, ActiveState, ...
    journal: list[str] = field(default_factory=list)     # its last lines, when not active (running)
    unit_started_ago: int | None = None   # seconds since the unit last started ejabberd (None: unknown)
    beam_node: str | None = None        # the node name the running VM was started with
    files: dict[str, str | None] = field(default_factory=dict)   # path -> content (None: missing)
    cookie_sha256: str | None = None
    secret_sha256: dict[str, str | None] = field(default_factory=dict)   # other secret files: path -> hash
    plugin_sha256: str | None = None
    mnesia_schema: bool = False
    restart_pending: bool = False       # an earlier run changed config and did not restart
    joining: dict | None = None         # a join marker: {"seed", "since"} of a join not yet verified
    stop_order: dict | None = None      # {"order": [node names], "when"} of the last stop-cluster
    os_move: dict | None = None         # {"from", "to", "since"}: an OS move under way (fab upgrade)
    departed: dict[str, tuple[str, str]] = field(default_factory=dict)  # node -> (how, when) left on purpose
    resolves: dict[str, str | None] = field(default_factory=dict)
    reach: dict[tuple[str, int], str] = field(default_factory=dict)
    ctl_status: int | None = None       # ejabberdctl status: 0 running, 1 starting, 3 down; None: no ejabberd
    beam_running: bool = False
    cluster_status: dict | None = None  # easy_cluster_status JSON, when the plugin answers
    cluster_statuses: dict | None = None   # every member's, when asked from this node (probe.gather_via)

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def os_release(self) -> str:
        """'Debian 13 (trixie)', or what an unknown release says it is."""
        return releases.describe(self.os_id, self.os_version)

    @property
    def installed(self) -> bool:
        return bool(self.ejabberd_version)

    @property
    def running(self) -> bool:
        return self.ctl_status == 0

    @property
    def unit_state(self) -> str:
        """ejabberd.service as systemctl shows it: 'active (running)', 'failed (exit-code)', ..."""
        u = self.unit
        if not u or u.get("LoadState") != "loaded":
            return "-"
        state = f"{u.get('ActiveState', '?')} ({u.get('SubState', '?')})"
        if u.get("Result") not in (None, "", "success"):
            state += f" result {u['Result']}"
        return state

    @property
    def unit_running(self) -> bool:
        return self.unit.get("ActiveState") == "active" and self.unit.get("SubState") == "running"

    @property
    def restarts(self) -> int:
        try:
            return int(self.unit.get("NRestarts", "0"))
        except ValueError:
            return 0


def probe_lines(output: str) -> tuple[list[tuple[str, str]], bool]:
    """A probe script's `key=value` lines, and whether it finished (printed its end=1)."""
    pairs = [(key, value) for key, sep, value in (line.partition("=") for line in output.splitlines()) if sep]
    return [p for p in pairs if p[0] != "end"], ("end", "1") in pairs


def parse_facts(host: str, output: str) -> HostFacts:
    f = HostFacts(host=host)
    pairs, complete = probe_lines(output)
    for key, value in pairs:
        if key.startswith("file:"):
            f.files[key[5:]] = None if value == "-" else base64.b64decode(value).decode(errors="replace")
        elif key.startswith("secret:"):
            f.secret_sha256[key[7:]] = value or None
        elif key.startswith("departed:"):
            how, _, when = value.partition(" ")
            f.departed[key[9:]] = (how, when)
        elif key == "joining":
            try:
                f.joining = json.loads(value)
            except json.JSONDecodeError:
                f.joining = {"seed": None}
        elif key == "os_move":
            try:
                f.os_move = json.loads(value)
            except json.JSONDecodeError:
                f.os_move = {"from": None, "to": None, "since": None}
        elif key == "stop_order":
            try:
                f.stop_order = json.loads(value)
            except json.JSONDecodeError:
                f.stop_order = None
        elif key.startswith("resolve:"):
            f.resolves[key[8:]] = value or None
        elif key.startswith("reach:"):
            _, peer, port = key.split(":")
            f.reach[(peer, int(port))] = value
        elif key == "unit":
            f.unit = dict(kv.split("=", 1) for kv in value.split() if "=" in kv)
        elif key == "unit_started_ago":
            f.unit_started_ago = int(value) if value.isdigit() else None
        elif key == "journal":
            f.journal = base64.b64decode(value).decode(errors="replace").splitlines() if value else []
        elif key == "beam_node":
            f.beam_node = value or None
        elif key == "addresses":
            f.addresses = value.split()
        elif key in ("ejabberd_version", "erlang_version", "pgsql_driver", "cookie_sha256", "plugin_sha256"):
            setattr(f, key, value or None)
        elif key in ("os_id", "os_version", "os_codename", "hostname"):
            setattr(f, key, value)
        elif key in ("systemd", "nft", "pg_client", "haproxy", "node_exporter", "mnesia_schema", "beam_running",
                     "restart_pending"):
            setattr(f, key, value == "yes")
        elif key == "ctl_status":
            f.ctl_status = int(value)
        elif key == "cluster_statuses":
            try:
                f.cluster_statuses = json.loads(value).get("statuses")
            except (json.JSONDecodeError, AttributeError):
                f.cluster_statuses = None
        elif key == "cluster_status":
            try:
                f.cluster_status = json.loads(value)
            except json.JSONDecodeError:
                f.cluster_status = None
    if not complete:
        f.error = "fact probe did not finish"
    return f


# --------------------------------------------------------------------------- cluster.database

@dataclass
class DatabaseHost:
    """What every host easycluster provisions PostgreSQL on answers (db_probe.sh, replica_probe.sh):
    its release, its addresses and what a name resolves to there; the cluster's role and database
    (asked where PostgreSQL runs as a primary) and the hash of the password the role was given."""
    host: str
    error: str | None = None
    os_id: str = ""
    os_version: str = ""
    systemd: bool = False
    addresses: list[str] = field(default_factory=list)
    resolve: str | None = None          # what the name the nodes use resolves to there
    role: bool = False
    owner: str | None = None            # the database's owner (None: no database)
    password_sha256: str | None = None  # of the password the role was given by easycluster

    @property
    def reachable(self) -> bool:
        return self.error is None

    def parse(self, key: str, value: str) -> bool:
        """One of the keys every database host's probe prints (True), or not (False)."""
        if key in ("os_id", "os_version"):
            setattr(self, key, value)
        elif key == "systemd":
            self.systemd = value == "yes"
        elif key == "addresses":
            self.addresses = value.split()
        elif key in ("resolve", "password_sha256"):
            setattr(self, key, value or None)
        elif key == "role":
            self.role = value == "1"
        elif key == "database":
            self.owner = value or None
        else:
            return False
        return True


@dataclass
class DbHostFacts(DatabaseHost):
    """The database host (cluster.database.host): db_probe.sh's answer."""
    postgresql: str | None = None       # the installed package's version
    cluster: str | None = None          # "15/main"
    online: bool = False
    conf: str | None = None             # easycluster's settings file (None: missing)
    hba: str = ""                       # easycluster's block of pg_hba.conf


def _parse_database_host(f: DatabaseHost, output: str, rest) -> DatabaseHost:
    """A database host's probe output into `f`: the keys every one prints, then `rest(key, value)`."""
    pairs, complete = probe_lines(output)
    for key, value in pairs:
        if not f.parse(key, value):
            rest(key, value)
    if not complete:
        f.error = "fact probe did not finish"
    return f


def parse_db_facts(host: str, output: str) -> DbHostFacts:
    f = DbHostFacts(host=host)

    def rest(key: str, value: str) -> None:
        if key in ("conf", "hba"):
            text = None if value == "-" else base64.b64decode(value).decode(errors="replace")
            setattr(f, key, text if key == "conf" else (text or ""))
        elif key == "online":
            f.online = value == "yes"
        elif key in ("postgresql", "cluster"):
            setattr(f, key, value or None)
    return _parse_database_host(f, output, rest)


@dataclass(frozen=True)
class EtcdMember:
    """A member of the quorum store, as `etcdctl member list` names it ("" until it first started)."""
    id: int
    name: str
    peer_urls: tuple[str, ...] = ()

    @property
    def hex_id(self) -> str:   # how etcdctl takes it
        return format(self.id, "x")


def parse_etcd_members(value: str) -> list[EtcdMember]:
    """`etcdctl member list -w json` (on one line) into its members; [] for anything else."""
    try:
        found = json.loads(value).get("members") if value else []
    except (ValueError, AttributeError):
        return []
    if not isinstance(found, list):
        return []
    return [EtcdMember(int(m["ID"]), str(m.get("name", "")), tuple(m.get("peerURLs") or ()))
            for m in found if isinstance(m, dict) and isinstance(m.get("ID"), int)]


def etcd_members(found) -> list[EtcdMember]:
    """The quorum store's members, as the first member holding its data lists them ([]: none
    runs, or it was never made: the members start it together)."""
    return next((rf.etcd_members for rf in found if rf.etcd_data and rf.etcd_members), [])


def patroni_list(found, skip: str | None = None) -> list[dict]:
    """Patroni's list of the members, as the first member that answers (not `skip`) read it."""
    return next((rf.members for rf in found if rf.host != skip and rf.reachable and rf.members), [])


def etcd_strangers(quorum: list[EtcdMember], listed: dict[str, str | None]) -> list[EtcdMember]:
    """The quorum store's members that are none of the listed hosts (host -> its address): named
    otherwise, or never started with a peer URL of none of them (a started join is not one)."""
    urls = {etcd_peer_url(a) for a in listed.values() if a}
    return [m for m in quorum if (m.name and m.name not in listed) or (not m.name and not urls & set(m.peer_urls))]


@dataclass
class ReplicaFacts(DatabaseHost):
    """A member of the replicated database (cluster.database.hosts): replica_probe.sh's answer
    (the role and database: asked on the primary)."""
    packages: dict[str, str] = field(default_factory=dict)   # installed: name -> version
    debian_clusters: list[str] = field(default_factory=list)   # Debian's own (pg_lsclusters): "17/main"
    etcd_conf: str | None = None        # easycluster's /etc/default/etcd (None: not ours, or none)
    files: dict[str, str | None] = field(default_factory=dict)   # the firewall's files (None: missing)
    patroni_sha256: str | None = None   # of Patroni's configuration (it holds a password)
    etcd_active: bool = False
    patroni_active: bool = False
    members: list[dict] = field(default_factory=list)   # `patronictl list -f json`: Member, Role, State, Lag...
    primary: bool = False               # PostgreSQL here is the primary (not in recovery)
    etcd_data: bool = False             # etcd holds easycluster's data here (it joined the quorum store once)
    etcd_members: list[EtcdMember] = field(default_factory=list)   # as this member's etcd lists them

    @property
    def installed(self) -> bool:
        return all(self.packages.get(p) for p in ("postgresql", "patroni", "etcd-server", "python3-etcd", "nftables"))


def parse_replica_facts(host: str, output: str) -> ReplicaFacts:
    f = ReplicaFacts(host=host)

    def rest(key: str, value: str) -> None:
        if key.startswith("pkg_"):
            if value:
                f.packages[key[4:]] = value
        elif key.startswith("file:"):
            f.files[key[5:]] = None if value == "-" else base64.b64decode(value).decode(errors="replace")
        elif key == "etcd_conf":
            f.etcd_conf = None if value in ("-", "") else base64.b64decode(value).decode(errors="replace")
        elif key == "primary":
            f.primary = value == "yes"
        elif key in ("etcd_active", "patroni_active"):
            setattr(f, key, value == "active")
        elif key == "etcd_data":
            f.etcd_data = value == "yes"
        elif key == "etcd_members":
            f.etcd_members = parse_etcd_members(value)
        elif key == "debian_clusters":
            f.debian_clusters = value.split()
        elif key == "patroni_sha256":
            f.patroni_sha256 = value or None
        elif key == "members":
            try:
                found = json.loads(value) if value else []
            except ValueError:
                found = []
            f.members = [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []
    return _parse_database_host(f, output, rest)


@dataclass
class SqlFacts:
    """The database as one node sees it (logged in as the cluster's role)."""
    host: str
    error: str | None = None            # could not log in: why (unreachable, refused, password...)
    version: str = ""                   # server_version
    size: int = 0                       # bytes (pg_database_size)
    marker: str | None = None           # the cluster whose data it holds (database.MARKER_TABLE)
    ejabberd_tables: bool = False       # ejabberd's schema is there (its `users` table)
    users: int | None = None            # rows of `users` (None: no table)
    migration: str | None = None        # fab migrate-to-sql's progress (database.MARKER_TABLE; None: none)

    @property
    def ok(self) -> bool:
        return self.error is None
