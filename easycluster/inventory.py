"""The inventory: one YAML file describing a cluster, validated whole before any host is touched.

Every problem is collected (not just the first) and reported as
`FILE: key.path: what is wrong`, so an operator fixes the file in one go.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import EasyClusterError, InventoryError
from .paths import HAPROXY_PORT

# Where the inventory is when nothing names it: the current directory, as an operator's
# infrastructure repository holds it beside its fabfile.
DEFAULT_INVENTORY = Path("inventory.yml")
INVENTORY_ENV = "EASYCLUSTER_INVENTORY"

# A Debian version: [epoch:]upstream[-revision]
DEBIAN_VERSION = re.compile(r"^(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
HOSTNAME = DOMAIN
NODE_NAME = re.compile(r"^[A-Za-z0-9_-]+@[A-Za-z0-9][A-Za-z0-9.-]*$")
IPV4 = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")
CLUSTER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
MASTER, SATELLITE = "master", "satellite"
ROLES = (MASTER, SATELLITE)
LOGLEVELS = ("none", "emergency", "alert", "critical", "error", "warning", "notice", "info", "debug")


@dataclass(frozen=True)
class Node:
    host: str                    # how SSH reaches it (a name in ssh_config, DNS, or an address)
    name: str                    # Erlang node name, e.g. ejabberd@xmpp1
    dist_interface: str | None   # address the distribution binds to; None: what `name`'s host resolves to
    role: str = "master"         # master: a disc copy of every table; satellite: none (docs/runbooks/satellites.md)

    @property
    def satellite(self) -> bool:
        return self.role == SATELLITE

    @property
    def node_host(self) -> str:
        """The host part of the node name: what peers resolve to reach this node."""
        return self.name.split("@", 1)[1]


@dataclass(frozen=True)
class Cluster:
    name: str
    ejabberd_version: str
    domains: tuple[str, ...]
    admins: tuple[str, ...]
    loglevel: str
    c2s_port: int
    s2s_port: int
    http_port: int
    in_band_registration: bool
    registration_timeout: int | str   # seconds between in-band registrations per IP, or "infinity"
    offline_limit: int                # messages kept per offline user (more bounce: resource-constraint)
    backups_keep: int                 # mnesia backups kept per host (older ones rotated out)
    certfiles: tuple[str, ...]        # TLS certificates on the hosts; none: c2s without TLS
    port_min: int
    port_max: int
    net_ticktime: int                 # seconds until a silent peer counts as down (partition detection)
    cookie_file: Path | None
    cookie_env: str | None
    dist_tls: bool = False            # TLS for the Erlang distribution (cluster CA, a cert per node)
    dist_tls_dir: Path | None = None  # the local secrets directory holding the CA and the nodes' keys
    mam: bool = False                 # the message archive (mod_mam, XEP-0313), stored in Mnesia
    database: "Database | None" = None   # PostgreSQL for persistent data (default_db: sql); None: Mnesia
    monitoring: "Monitoring | None" = None   # Prometheus and Alertmanager on a host of their own
    storage: str = "disc_only_copies"  # the users' Mnesia tables on masters (STORAGE_TYPES, USER_TABLES)


@dataclass(frozen=True)
class Database:
    """cluster.database: PostgreSQL holding the persistent data (docs/database.md). Either
    provisioned by easycluster on `managed_host` (an SSH host, not a node), or an existing
    server (`managed_host` None)."""
    type: str                         # postgresql
    managed_host: str | None          # the SSH host easycluster installs PostgreSQL on; None: external
    server: str                       # what the nodes connect to (host name or address)
    port: int
    name: str                         # the database
    user: str                         # the role ejabberd logs in as
    password_file: Path | None        # a local secrets file (created for a managed database)
    password_env: str | None          # or an environment variable
    replicas: tuple[str, ...] = ()    # cluster.database.hosts: the replicated database's members
    replication_file: Path | None = None   # their replication role's password (a local secrets file)

    @property
    def managed(self) -> bool:
        """One database host easycluster provisions (cluster.database.host)."""
        return self.managed_host is not None

    @property
    def replicated(self) -> bool:
        """A replicated database easycluster provisions (Patroni and etcd on `replicas`; the
        nodes reach its primary through HAProxy on their own loopback)."""
        return bool(self.replicas)

    @property
    def provisioned(self) -> bool:
        """easycluster provisions it (and generates its password)."""
        return self.managed or self.replicated

    @property
    def hosts(self) -> tuple[str, ...]:
        """The SSH hosts easycluster provisions for it."""
        return self.replicas or ((self.managed_host,) if self.managed_host else ())

    @property
    def where(self) -> str:
        return f"{self.type} {self.name} on {self.server}:{self.port}"


@dataclass(frozen=True)
class Monitoring:
    """cluster.monitoring: Debian's Prometheus and Alertmanager on `host` (an SSH host, not a
    node), scraping node-exporter on every node and database host (docs/monitoring.md)."""
    host: str
    address: str                      # its address: what the hosts' firewalls let in to node-exporter
    alert_after: int                  # seconds an urgent condition holds before its alert fires (for:)
    scrape_interval: int              # seconds
    email_to: tuple[str, ...] = ()    # Alertmanager's receivers: e-mail...
    email_from: str | None = None
    smarthost: str | None = None      # host:port of the mail relay
    webhooks: tuple[str, ...] = ()    # ...and webhooks (POSTed Alertmanager's JSON)


@dataclass(frozen=True)
class Inventory:
    path: Path
    cluster: Cluster
    nodes: tuple[Node, ...]
    ssh_config: Path | None
    ssh_user: str | None

    @property
    def masters(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if not n.satellite)

    @property
    def satellites(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.satellite)

    def node(self, host_or_name: str) -> Node:
        for node in self.nodes:
            if host_or_name in (node.host, node.name):
                return node
        raise EasyClusterError(
            f"{host_or_name!r} is not a node of {self.path} (nodes: {', '.join(n.host for n in self.nodes)})")


# --------------------------------------------------------------------------- schema

# section -> key -> (type(s), required)
_SCHEMA: dict[str, dict[str, tuple[Any, bool]]] = {
    "": {"cluster": (dict, True), "nodes": (list, True), "ssh": (dict, False)},
    "cluster": {
        "name": (str, True), "ejabberd_version": (str, True), "domains": (list, True),
        "admins": (list, False), "loglevel": (str, False), "listen": (dict, False),
        "in_band_registration": (bool, False), "distribution": (dict, False), "cookie": (dict, True),
        "certfiles": (list, False), "registration_timeout": (object, False), "backups": (dict, False),
        "mam": (bool, False), "database": (dict, False), "offline_limit": (int, False),
        "monitoring": (dict, False), "storage": (str, False),
    },
    "cluster.monitoring": {"host": (str, True), "address": (str, True), "alert_after": (int, False),
                           "scrape_interval": (int, False), "email": (dict, False), "webhooks": (list, False)},
    "cluster.monitoring.email": {"to": (list, True), "from": (str, True), "smarthost": (str, True)},
    "cluster.database": {"type": (str, True), "host": (str, False), "hosts": (list, False), "address": (str, False),
                         "name": (str, False), "user": (str, False), "password_file": (str, False),
                         "password_env": (str, False), "external": (dict, False)},
    "cluster.database.external": {"host": (str, True), "port": (int, False), "name": (str, False),
                                  "user": (str, False), "password_file": (str, False),
                                  "password_env": (str, False)},
    "cluster.backups": {"keep": (int, False)},
    "cluster.listen": {"c2s": (int, False), "s2s": (int, False), "http": (int, False)},
    "cluster.distribution": {"port_min": (int, False), "port_max": (int, False), "net_ticktime": (int, False),
                             "tls": (bool, False), "tls_dir": (str, False)},
    "cluster.cookie": {"file": (str, False), "env": (str, False)},
    "ssh": {"config": (str, False), "user": (str, False)},
    "node": {"host": (str, True), "name": (str, False), "dist_interface": (str, False), "role": (str, False)},
}


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}" if key else message)

    def section(self, data: Any, schema: str, key: str) -> dict:
        """Check a mapping's keys and value types; return it (or {} if unusable)."""
        if not isinstance(data, dict):
            self.fail(key or "(top level)", f"must be a mapping, not {_kind(data)}")
            return {}
        allowed = _SCHEMA[schema]
        for name, value in data.items():
            path = f"{key}.{name}" if key else str(name)
            if name not in allowed:
                hint = difflib.get_close_matches(str(name), allowed, n=1)
                self.fail(path, "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                 f" (allowed: {', '.join(allowed)})"))
                continue
            typ, _ = allowed[name]
            if value is None or not _is(value, typ):
                self.fail(path, f"must be {_type_name(typ)}, not {_kind(value)}")
        for name, (_, required) in allowed.items():
            if required and name not in data:
                self.fail(f"{key}.{name}" if key else name, "missing (required)")
        return {k: v for k, v in data.items() if k in allowed and v is not None and _is(v, allowed[k][0])}


def _is(value: Any, typ: Any) -> bool:
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is object:   # checked by the caller
        return True
    return isinstance(value, typ)


def _type_name(typ: Any) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list",
            dict: "a mapping", object: "a value"}[typ]


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "a mapping",
            float: "a number"}.get(type(value), type(value).__name__)


def inventory_path(given: str | None = None, configured: str | None = None) -> Path:
    """--inventory, else $EASYCLUSTER_INVENTORY, else `easycluster.inventory` from Fabric's
    configuration files (fabric.yaml beside the fabfile, ~/.fabric.yaml, /etc/fabric.yaml),
    else ./inventory.yml."""
    return Path(given or os.environ.get(INVENTORY_ENV) or configured or DEFAULT_INVENTORY)


def load_inventory(given: str | Path | None = None, configured: str | None = None) -> Inventory:
    path = inventory_path(str(given) if given else None, configured)
    try:
        text = path.read_text()
    except FileNotFoundError:
        hint = (" (pass --inventory, set $EASYCLUSTER_INVENTORY, or write ./inventory.yml:"
                " see inventory/example.yml)") if path == DEFAULT_INVENTORY else ""
        raise EasyClusterError(f"inventory {path} not found{hint}") from None
    except OSError as exc:
        raise EasyClusterError(f"inventory {path}: {exc.strerror}") from None
    return parse_inventory(text, path)


def parse_inventory(text: str, path: Path) -> Inventory:
    try:
        return _parse_inventory(text, path)
    except RecursionError:   # the YAML parser and the checks both recurse into nested values
        raise InventoryError(path, ["(top level): nested too deeply to be an inventory"]) from None


def _parse_inventory(text: str, path: Path) -> Inventory:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InventoryError(path, [f"YAML syntax error: {where}{problem}"]) from None
    chk = _Checker()
    top = chk.section(data, "", "")
    cluster = _cluster(chk, top.get("cluster", {}), path)
    nodes = _nodes(chk, top.get("nodes", []))
    ssh = chk.section(top.get("ssh", {}), "ssh", "ssh")
    ssh_config = _relative(path, ssh["config"]) if "config" in ssh else None
    _roles(chk, nodes, cluster)
    if chk.problems:
        raise InventoryError(path, chk.problems)
    return Inventory(path=path, cluster=cluster, nodes=tuple(nodes), ssh_config=ssh_config,
                     ssh_user=ssh.get("user"))


def _roles(chk: _Checker, nodes: list[Node], cluster: Cluster | None) -> None:
    """The first node seeds a new cluster: a master. The archive cannot run on a satellite."""
    if not nodes:
        return
    if nodes[0].satellite:
        chk.fail("nodes[0].role", "satellite: the first node seeds a new cluster and must be a master "
                                  "(list a master first)")
    db = cluster.database if cluster else None
    if db and db.managed_host in {n.host for n in nodes}:
        chk.fail("cluster.database.host", f"{db.managed_host!r} is a node: the database needs a host of its own "
                                          "(a node's death must not take the data with it)")
    shared = [h for h in (db.replicas if db else ()) if h in {n.host for n in nodes}]
    if shared:
        chk.fail("cluster.database.hosts", f"{shared[0]!r} is a node: the database needs hosts of its own "
                                           "(a node's death must not take a database member with it)")
    mon = cluster.monitoring if cluster else None
    if mon and mon.host in {n.host for n in nodes} | set(db.hosts if db else ()):
        chk.fail("cluster.monitoring.host", f"{mon.host!r} is a node or a database host: monitoring needs a host of "
                                            "its own (what it watches must not take it down with it)")
    if cluster and cluster.mam and not db and any(n.satellite for n in nodes):
        chk.fail("cluster.mam", "the archive (mod_mam) needs a local copy of its table on every node, and a "
                                "satellite holds none: no satellites with cluster.mam")


def _relative(inventory: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (inventory.parent / p)


def _cluster(chk: _Checker, raw: Any, path: Path) -> Cluster | None:
    c = chk.section(raw, "cluster", "cluster")
    name = c.get("name", "")
    if name and not CLUSTER_NAME.match(name):
        chk.fail("cluster.name", f"{name!r}: use lowercase letters, digits and '-'")
    version = c.get("ejabberd_version", "")
    if version and not DEBIAN_VERSION.match(version):
        chk.fail("cluster.ejabberd_version", f"{version!r} is not a Debian package version (e.g. \"23.01-1\")")
    domains = c.get("domains", [])
    if "domains" in c and not domains:
        chk.fail("cluster.domains", "needs at least one XMPP domain")
    for i, d in enumerate(domains):
        if not isinstance(d, str) or not DOMAIN.match(d):
            chk.fail(f"cluster.domains[{i}]", f"{d!r} is not a valid domain name")
    if len(set(map(str, domains))) != len(domains):
        chk.fail("cluster.domains", "lists a domain twice")
    admins = c.get("admins", [])
    for i, a in enumerate(admins):
        if not isinstance(a, str) or not re.match(r"^[^@\s/]+@[^@\s/]+$", a):
            chk.fail(f"cluster.admins[{i}]", f"{a!r} is not a bare JID (user@domain)")
        elif a.split("@", 1)[1] not in domains:
            chk.fail(f"cluster.admins[{i}]", f"{a!r} is not in one of cluster.domains")
    certfiles = c.get("certfiles", [])
    for i, cert in enumerate(certfiles):
        if not isinstance(cert, str) or not cert.startswith("/"):
            chk.fail(f"cluster.certfiles[{i}]", f"{cert!r} is not an absolute path (on the hosts)")
    loglevel = c.get("loglevel", "info")
    if loglevel not in LOGLEVELS:
        chk.fail("cluster.loglevel", f"{loglevel!r}: one of {', '.join(LOGLEVELS)}")
    listen = chk.section(c.get("listen", {}), "cluster.listen", "cluster.listen")
    ports = {"c2s": 5222, "s2s": 5269, "http": 5280, **listen}
    for k, v in listen.items():
        if not 1 <= v <= 65535:
            chk.fail(f"cluster.listen.{k}", f"{v} is not a TCP port")
    dist = chk.section(c.get("distribution", {}), "cluster.distribution", "cluster.distribution")
    pmin, pmax = dist.get("port_min", 4370), dist.get("port_max", 4379)
    for k, v in (("port_min", pmin), ("port_max", pmax)):
        if not 1024 <= v <= 65535:
            chk.fail(f"cluster.distribution.{k}", f"{v} is not a port in 1024-65535")
    ticktime = dist.get("net_ticktime", 60)
    if not 5 <= ticktime <= 600:
        chk.fail("cluster.distribution.net_ticktime", f"{ticktime}: seconds from 5 to 600 (Erlang's default is 60)")
    if pmin > pmax:
        chk.fail("cluster.distribution", f"port window {pmin}-{pmax} is empty (port_min > port_max)")
    elif pmin == pmax:
        # ejabberdctl's own VM listens in the same window (Debian's ejabberdctl gives it
        # FIREWALL_WINDOW too): with one port the node holds it and every ejabberdctl call fails
        chk.fail("cluster.distribution", f"port window {pmin}-{pmax} is one port: the node and each ejabberdctl"
                                         " call need one each (at least 2; the default has 10)")
    if pmin <= 4369 <= pmax:
        chk.fail("cluster.distribution", f"port window {pmin}-{pmax} contains epmd's port 4369")
    clash = {p for p in ports.values() if pmin <= p <= pmax}
    if clash:
        chk.fail("cluster.distribution", f"port window {pmin}-{pmax} overlaps listener port(s) {sorted(clash)}")
    reg_timeout = c.get("registration_timeout", 600)
    if not (reg_timeout == "infinity" or (_is(reg_timeout, int) and reg_timeout >= 0)):
        chk.fail("cluster.registration_timeout", f"{reg_timeout!r}: seconds (0 or more) or \"infinity\"")
    offline_limit = c.get("offline_limit", OFFLINE_LIMIT)
    if _is(offline_limit, int) and not 1 <= offline_limit <= OFFLINE_LIMIT_MAX:
        chk.fail("cluster.offline_limit", f"{offline_limit}: messages kept per offline user, 1 to "
                                          f"{OFFLINE_LIMIT_MAX} (docs/reliability.md: what they cost)")
    storage = c.get("storage", STORAGE_TYPES[0])
    if _is(storage, str) and storage not in STORAGE_TYPES:
        chk.fail("cluster.storage", f"{storage!r}: one of {', '.join(STORAGE_TYPES)} (docs/performance.md: "
                                    "what each costs)")
    elif storage != STORAGE_TYPES[0] and c.get("database"):
        chk.fail("cluster.storage", f"{storage}: the users' tables are in cluster.database, not in Mnesia; "
                                    "leave cluster.storage out")
    backups = chk.section(c.get("backups", {}), "cluster.backups", "cluster.backups")
    keep = backups.get("keep", 5)
    if keep < 1:
        chk.fail("cluster.backups.keep", f"{keep}: keep at least 1 backup")
    cookie = chk.section(c.get("cookie", {}), "cluster.cookie", "cluster.cookie")
    if "cookie" in c and len(cookie.keys() & {"file", "env"}) != 1:
        chk.fail("cluster.cookie", "set exactly one of `file` (a local secrets file) or `env` (a variable name)")
    if "env" in cookie and not ENV_NAME.match(cookie["env"]):
        chk.fail("cluster.cookie.env", f"{cookie['env']!r} is not an environment variable name")
    tls_dir = None
    if dist.get("tls"):
        if "tls_dir" in dist:
            tls_dir = _relative(path, dist["tls_dir"])
        elif "file" in cookie:   # next to the cookie, in the same secrets directory
            tls_dir = _relative(path, cookie["file"]).parent / f"{name}-dist-tls"
        elif "env" in cookie:
            chk.fail("cluster.distribution.tls_dir", "required with cookie.env: the local directory "
                                                     "(kept like a secret) for the CA and the nodes' keys")
    database = _database(chk, c["database"], path, name, cookie) if "database" in c else None
    monitoring = _monitoring(chk, c["monitoring"]) if "monitoring" in c else None
    if chk.problems:
        return None
    return Cluster(
        name=name, ejabberd_version=version, domains=tuple(domains), admins=tuple(admins),
        loglevel=loglevel, c2s_port=ports["c2s"], s2s_port=ports["s2s"], http_port=ports["http"],
        in_band_registration=c.get("in_band_registration", False), registration_timeout=reg_timeout,
        offline_limit=offline_limit,
        backups_keep=keep, certfiles=tuple(certfiles), port_min=pmin, port_max=pmax,
        net_ticktime=ticktime, cookie_file=_relative(path, cookie["file"]) if "file" in cookie else None,
        cookie_env=cookie.get("env"), dist_tls=bool(dist.get("tls")), dist_tls_dir=tls_dir,
        mam=c.get("mam", False), database=database, monitoring=monitoring, storage=storage)


SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# cluster.storage: how a master holds the users' tables (USER_TABLES). disc_only_copies, ejabberd's
# default: dets files, read from disc, 2 GB at most each; disc_copies: in memory, with a disc image
# (faster joins, restarts and reads; the memory on every master). ejabberd converts a node's copies
# at its start (ejabberd_mnesia, from MNESIA_SCHEMA_FILE); the other tables keep ejabberd's defaults.
STORAGE_TYPES = ("disc_only_copies", "disc_copies")
USER_TABLES = ("passwd", "roster", "roster_version", "last_activity", "privacy", "private_storage", "vcard")

# Messages kept per offline user: ejabberd's default is 100, which a user cut off by a partition
# for a minute in a busy conversation exceeds (issue 32); a phone offline over a weekend needs
# more. The ceiling keeps Mnesia's offline table (one dets file per node, at most 2 GB) in reach.
OFFLINE_LIMIT = 1000
OFFLINE_LIMIT_MAX = 100_000
DATABASE_TYPES = ("postgresql",)


def _database(chk: _Checker, raw: Any, path: Path, cluster_name: str, cookie: dict) -> Database | None:
    """`{type: postgresql, host: H}`: a database host easycluster provisions; or `{type:
    postgresql, external: {host, port, name, user, password_file | password_env}}`."""
    key = "cluster.database"
    d = chk.section(raw, key, key)
    kind = d.get("type")
    if kind is not None and kind not in DATABASE_TYPES:
        chk.fail(f"{key}.type", f"{kind!r}: one of {', '.join(DATABASE_TYPES)}")
    if len(d.keys() & {"host", "hosts", "external"}) != 1:
        chk.fail(key, "set exactly one of `host` (a host easycluster provisions with PostgreSQL), `hosts` (three "
                      "or more it provisions as one replicated PostgreSQL) or `external` (an existing server)")
        return None
    replicas: tuple[str, ...] = ()
    if "hosts" in d:
        replicas = tuple(h for h in d["hosts"] if isinstance(h, str))
        bad = [h for h in d["hosts"] if not isinstance(h, str) or not (HOSTNAME.match(h) or IPV4.match(h))]
        if bad:
            chk.fail(f"{key}.hosts", f"{bad[0]!r} is not a host name or address")
        elif len(set(replicas)) != len(replicas):
            chk.fail(f"{key}.hosts", "lists a host twice")
        elif len(replicas) < 3:   # an even number is a replacement under way: 4 survive the loss of one, as 3 do
            chk.fail(f"{key}.hosts", f"{len(replicas)} hosts: at least 3 (the quorum store, etcd, runs on them: a "
                                     "majority must survive the loss of one)")
        if "address" in d:
            chk.fail(f"{key}.address", "not with `hosts`: each node reaches the primary through HAProxy on its "
                                       "own loopback")
    if "external" in d:
        for k in ("address", "name", "user", "password_file", "password_env"):
            if k in d:
                chk.fail(f"{key}.{k}", "goes under cluster.database.external for an existing server")
        key = f"{key}.external"
        e = chk.section(d["external"], key, key)
        if "host" not in e:
            return None
        managed, server, port, given = None, e["host"], e.get("port", 5432), e
        if len(e.keys() & {"password_file", "password_env"}) != 1:
            chk.fail(key, "set exactly one of `password_file` (a local secrets file) or `password_env` (a variable "
                          "name): the password of the existing server's role")
    elif replicas:
        managed, server, port, given = None, "127.0.0.1", HAPROXY_PORT, d
        if "password_file" in d and "password_env" in d:
            chk.fail(key, "set at most one of `password_file` or `password_env`")
    else:
        managed = d["host"]
        if not (HOSTNAME.match(managed) or IPV4.match(managed)):
            chk.fail(f"{key}.host", f"{managed!r} is not a host name or address")
        server, port, given = d.get("address", managed), 5432, d
        if "password_file" in d and "password_env" in d:
            chk.fail(key, "set at most one of `password_file` or `password_env`")
    if not (HOSTNAME.match(server) or IPV4.match(server)):
        chk.fail(f"{key}.{'address' if managed else 'host'}", f"{server!r} is not a host name or address")
    if not 1 <= port <= 65535:
        chk.fail(f"{key}.port", f"{port} is not a TCP port")
    db_name, user = given.get("name", "ejabberd"), given.get("user", "ejabberd")
    for k, v in (("name", db_name), ("user", user)):
        if not SQL_NAME.match(v):
            chk.fail(f"{key}.{k}", f"{v!r}: use lowercase letters, digits and '_' (not starting with a digit)")
    env = given.get("password_env")
    if env is not None and not ENV_NAME.match(env):
        chk.fail(f"{key}.password_env", f"{env!r} is not an environment variable name")
    password_file = _relative(path, given["password_file"]) if "password_file" in given else None
    if (managed or replicas) and password_file is None and env is None:
        if "file" in cookie:   # next to the cookie, in the same secrets directory
            password_file = _relative(path, cookie["file"]).parent / f"{cluster_name}-database.password"
        elif "env" in cookie:
            chk.fail(f"{key}.password_file", "required with cookie.env: the local secrets file for the "
                                             "database password easycluster generates (or set password_env)")
    replication_file = None
    if replicas:   # beside the database password's file, or the cookie's
        beside = password_file or (_relative(path, cookie["file"]) if "file" in cookie else None)
        if beside is None:
            chk.fail(f"{key}.password_file", "required with `hosts` when the cookie and the password come from the "
                                             "environment: the replication password easycluster generates goes "
                                             "beside it")
        else:
            replication_file = beside.parent / f"{cluster_name}-replication.password"
    return Database(type=kind or "postgresql", managed_host=managed, server=server, port=port, name=db_name,
                    user=user, password_file=password_file, password_env=env, replicas=replicas,
                    replication_file=replication_file)


EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
URL = re.compile(r"^https?://[^\s]+$")
ALERT_AFTER = (60, 5, 3600)       # default, least, most (seconds)
SCRAPE_INTERVAL = (15, 5, 300)


def _monitoring(chk: _Checker, raw: Any) -> Monitoring | None:
    """`{host: H, alert_after: S, email: {to, from, smarthost}, webhooks: [URL]}`."""
    key = "cluster.monitoring"
    m = chk.section(raw, key, key)
    host = m.get("host")
    if host is None:
        return None
    if not (HOSTNAME.match(host) or IPV4.match(host)):
        chk.fail(f"{key}.host", f"{host!r} is not a host name or address")
    address = m.get("address", "")
    if address and not IPV4.match(address):
        chk.fail(f"{key}.address", f"{address!r} is not an IPv4 address")
    numbers = {}
    for k, (default, least, most) in (("alert_after", ALERT_AFTER), ("scrape_interval", SCRAPE_INTERVAL)):
        numbers[k] = m.get(k, default)
        if not least <= numbers[k] <= most:
            chk.fail(f"{key}.{k}", f"{numbers[k]}: seconds from {least} to {most}")
    if numbers["alert_after"] < numbers["scrape_interval"]:
        chk.fail(f"{key}.alert_after", f"{numbers['alert_after']} s is shorter than scrape_interval "
                                       f"({numbers['scrape_interval']} s): an alert needs a scrape to fire")
    email = chk.section(m["email"], f"{key}.email", f"{key}.email") if "email" in m else {}
    for i, to in enumerate(email.get("to", [])):
        if not isinstance(to, str) or not EMAIL.match(to):
            chk.fail(f"{key}.email.to[{i}]", f"{to!r} is not an e-mail address")
    if "from" in email and not EMAIL.match(email["from"]):
        chk.fail(f"{key}.email.from", f"{email['from']!r} is not an e-mail address")
    smarthost = email.get("smarthost")
    if smarthost is not None and not re.match(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$", smarthost):
        chk.fail(f"{key}.email.smarthost", f"{smarthost!r}: the mail relay as host:port (e.g. mail.example.org:587)")
    webhooks = m.get("webhooks", [])
    for i, url in enumerate(webhooks):
        if not isinstance(url, str) or not URL.match(url):
            chk.fail(f"{key}.webhooks[{i}]", f"{url!r} is not an http(s) URL")
    return Monitoring(host=host, address=address, alert_after=numbers["alert_after"],
                      scrape_interval=numbers["scrape_interval"],
                      email_to=tuple(t for t in email.get("to", []) if isinstance(t, str)),
                      email_from=email.get("from"), smarthost=smarthost,
                      webhooks=tuple(u for u in webhooks if isinstance(u, str)))


def _nodes(chk: _Checker, raw: Any) -> list[Node]:
    if not isinstance(raw, list):
        return []
    if not raw:
        chk.fail("nodes", "needs at least one node")
    nodes: list[Node] = []
    index: list[int] = []   # nodes[k] came from raw[index[k]], for messages
    for i, item in enumerate(raw):
        key = f"nodes[{i}]"
        n = chk.section(item, "node", key)
        host = n.get("host")
        if host is None:
            continue
        if not (HOSTNAME.match(host) or IPV4.match(host)):
            chk.fail(f"{key}.host", f"{host!r} is not a host name or address")
            continue
        if "name" not in n and IPV4.match(host):
            chk.fail(f"{key}.name", "missing: the host is an address, and node names must use host names "
                                    "(set name: ejabberd@<hostname>)")
            continue
        name = n.get("name") or f"ejabberd@{host.split('.')[0]}"
        if not NODE_NAME.match(name):
            chk.fail(f"{key}.name", f"{name!r} is not an Erlang node name (name@host, letters, digits, _ -)")
            continue
        if IPV4.match(name.split("@", 1)[1]):
            chk.fail(f"{key}.name", f"{name!r} uses an IP address: node names must use host names "
                                    "(an address change would orphan the node's data)")
            continue
        iface = n.get("dist_interface")
        if iface is not None and not IPV4.match(iface):
            chk.fail(f"{key}.dist_interface", f"{iface!r} is not an IPv4 address")
        role = n.get("role", MASTER)
        if role not in ROLES:
            chk.fail(f"{key}.role", f"{role!r}: master (a disc copy of every table) or satellite (none)")
            continue
        nodes.append(Node(host=host, name=name, dist_interface=iface, role=role))
        index.append(i)
    for attr, what in (("host", "host"), ("name", "node name")):
        seen: dict[str, int] = {}
        for i, node in zip(index, nodes):
            value = getattr(node, attr)
            if value in seen:
                chk.fail(f"nodes[{i}].{attr}", f"{what} {value!r} is also nodes[{seen[value]}]'s")
            seen.setdefault(value, i)
    longs = {"." in n.node_host for n in nodes}
    if len(longs) > 1:
        chk.fail("nodes", "mixes short and long node names (ejabberd@host vs ejabberd@host.domain): "
                          "Erlang cannot connect the two kinds; use one")
    return nodes
