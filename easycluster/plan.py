"""Preflight and plan: pure functions from inventory + facts to problems and ordered steps.

Nothing here talks to a host, so every rule is tested table-driven without a lab.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace

from . import releases
from .facts import DatabaseHost, DbHostFacts, HostFacts, ReplicaFacts, SqlFacts, etcd_members, etcd_strangers
from .inventory import Inventory, Node
from .paths import COOKIE_PATH, EJABBERD_DEFAULT, EJABBERD_YML
from .render import ManagedFile, Member, host_files, managed_files, plugin_sha256, replica_files
from .secrets import Secret
from .tls import NodeTLS

# Step kinds, in the order apply runs their phases.
RESET, ROLE, INSTALL, DATABASE, WRITE, PLUGIN, RELOAD, START, RESTART, JOIN, SATELLITE = (
    "reset", "role", "install", "database", "write", "plugin", "reload", "start", "restart", "join", "satellite")
KIND_ORDER = (RESET, ROLE, DATABASE, INSTALL, WRITE, PLUGIN, RELOAD, START, RESTART, JOIN, SATELLITE)
# What a DATABASE step does (Step.action), in this order: on the database host (database.provision),
# then (from the first node, which has ejabberd's schema file) in the database.
DB_INSTALL, DB_CONF, DB_HBA, DB_ROLE, DB_CREATE, DB_SCHEMA = (
    "install", "conf", "hba", "role", "create", "schema")
# ... and on each member of a replicated database (cluster.database.hosts): installed, its etcd
# settings and Patroni configuration written, its units started (replicated.provision)
DB_ETCD, DB_PATRONI, DB_START, DB_FIREWALL = "etcd", "patroni", "start", "firewall"
DB_JOIN = "join"   # a member new to a running quorum store: added to etcd, then started (one at a time)

# The node name Debian's package runs under when nobody configured one (its postinst starts it).
PACKAGE_NODE = "ejabberd@localhost"


@dataclass(frozen=True)
class Problem:
    host: str
    check: str
    detail: str
    fix: str


@dataclass(frozen=True)
class Step:
    kind: str
    host: str
    summary: str
    diff: str = ""
    file: ManagedFile | None = None
    seed: str | None = None          # join: the running member to join
    at_boot: bool = False            # join: during the node's first start (plugin boot_join)
    action: str = ""                 # database: which of DB_* (the host is the database host's)
    peer_url: str = ""               # DB_JOIN: the joining member's etcd peer URL
    endpoints: tuple[str, ...] = ()  # DB_JOIN: the running quorum store's client URLs


@dataclass
class Plan:
    steps: list[Step]
    seed: Node
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # warnings that do not stop the run

    def by_kind(self, kind: str) -> list[Step]:
        return [s for s in self.steps if s.kind == kind]

    def hosts_with(self, kind: str) -> list[str]:
        return [s.host for s in self.by_kind(kind)]

    @property
    def changes(self) -> bool:
        return bool(self.steps)


def packages(inv: Inventory) -> tuple[str, ...]:
    """Packages a node has along with ejabberd: with cluster.database, ejabberd's PostgreSQL
    driver, and for an external server PostgreSQL's client (`fab backup`'s pg_dump runs on a node);
    with cluster.monitoring, node-exporter."""
    db = inv.cluster.database
    exporter = ("prometheus-node-exporter",) if inv.cluster.monitoring else ()
    if not db:
        return exporter
    if db.replicated:   # HAProxy: the node's way to the primary
        return ("erlang-p1-pgsql", "postgresql-client", "haproxy") + exporter
    return (("erlang-p1-pgsql",) if db.managed else ("erlang-p1-pgsql", "postgresql-client")) + exporter


def dist_address(node: Node, facts: dict[str, HostFacts]) -> str | None:
    """The address node's distribution binds to: set in the inventory, or what its
    node name's host resolves to on its own host."""
    if node.dist_interface:
        return node.dist_interface
    own = facts.get(node.host)
    return own.resolves.get(node.node_host) if own else None


# --------------------------------------------------------------------------- preflight

def package_nodes(inv: Inventory, facts: dict[str, HostFacts]) -> list[str]:
    """Hosts where `apt-get install ejabberd` started the package's own node (ejabberd@localhost,
    Debian's default) before easycluster configured anything: it serves nobody yet, and its
    Mnesia data is named after a node that will never run again. Deploy resets it (stopped, its
    Mnesia directory kept in a tarball) and goes on as with a node that never ran."""
    found = []
    for node in inv.nodes:
        f = facts[node.host]
        ours = "Managed by easycluster" in (f.files.get(EJABBERD_DEFAULT) or "")
        if f.reachable and f.beam_running and f.beam_node == PACKAGE_NODE != node.name and not ours:
            found.append(node.host)
    return found


def current_role(node: Node, facts: dict[str, HostFacts], seed_status: dict | None) -> str | None:
    """What the node is now: master (its Mnesia schema on disc), satellite (in RAM), or None
    (not a member, nothing known). A running node says so itself; a stopped member is seen in
    the storage type of its schema copy on the seed; a stopped node with a schema on its disc
    was a master (or a standalone node)."""
    f = facts[node.host]
    st = f.cluster_status if f.running else None
    schema_type = (st or {}).get("schema") if st else ((seed_status or {}).get("tables", {})
                                                         .get("schema", {}).get(node.name))
    if schema_type == "ram_copies":
        return SATELLITE
    if schema_type in ("disc_copies", "disc_only_copies") or (not st and f.mnesia_schema):
        return "master"
    return None


def role_changes(inv: Inventory, facts: dict[str, HostFacts]) -> list[str]:
    """Hosts whose node is a member in the other role than the inventory gives it: converted
    by taking it out (stopped, out of the schema, its Mnesia directory emptied) and bringing it
    back in its role. Nothing is lost: a master's data is on the other masters, a satellite has
    none."""
    seed, members = choose_seed(inv, facts)
    seed_f = facts[seed.host]
    seed_status = seed_f.cluster_status if seed_f.running else None
    found = []
    for node in inv.nodes:
        if node is seed or (node.name not in members and not facts[node.host].running):
            continue
        now = current_role(node, facts, seed_status)
        if now is not None and now != node.role and (node.name in members):
            found.append(node.host)
    return found


def as_reset(facts: dict[str, HostFacts], hosts: list[str]) -> dict[str, HostFacts]:
    """The facts as they will be once `hosts` are reset: stopped, no Mnesia data, no node."""
    return {h: (replace(f, ctl_status=3, beam_running=False, beam_node=None, mnesia_schema=False,
                        cluster_status=None, cluster_statuses=None) if h in hosts else f)
            for h, f in facts.items()}


def preflight(inv: Inventory, facts: dict[str, HostFacts], cookie: Secret) -> list[Problem]:
    problems: list[Problem] = []
    pin = inv.cluster.ejabberd_version
    for node in inv.nodes:
        f = facts[node.host]
        if not f.reachable:
            problems.append(Problem(node.host, "ssh", f.error or "unreachable",
                                    "check the host is up and that ssh_config, user and key are right"))
            continue
        if not f.systemd:
            problems.append(Problem(node.host, "init", "systemd is not running as PID 1",
                                    "easycluster runs every node under Debian's ejabberd.service: boot the "
                                    "host with systemd (Debian's default)"))
        if f.beam_running and f.beam_node and f.beam_node != node.name:
            problems.append(Problem(node.host, "node name", f"ejabberd runs here as {f.beam_node}, not {node.name}",
                                    "stop it and move its data away deliberately (renaming a node holding data "
                                    "is a runbook of its own), or fix the inventory"))
            continue
        if not releases.known(f.os_id, f.os_version):
            problems.append(Problem(node.host, "os", f"{f.os_release}: a release easycluster does not know",
                                    f"easycluster runs clusters on {releases.supported()} only"))
        if f.installed and f.ejabberd_version != pin:
            problems.append(Problem(node.host, "version", f"ejabberd {f.ejabberd_version} installed, "
                                    f"the inventory pins {pin}",
                                    "`fab upgrade` moves the running cluster to the pinned version "
                                    "(deploy never changes the version of a node holding data); or pin "
                                    "the installed one"))
        address = dist_address(node, facts)
        if not address:
            problems.append(Problem(node.host, "resolve", f"{node.node_host} does not resolve on its own host",
                                    f"add {node.node_host} to /etc/hosts or DNS, or set dist_interface"))
        elif address.startswith("127."):
            problems.append(Problem(node.host, "resolve", f"{node.node_host} resolves to loopback {address}",
                                    "map it to the cluster interface's address in /etc/hosts, or set dist_interface"))
        elif address not in f.addresses:
            problems.append(Problem(node.host, "resolve", f"{address} (for {node.node_host}) is not an address "
                                    "of this host", "fix /etc/hosts or dist_interface"))
        status = f.cluster_status
        if status and status.get("node") != node.name:
            problems.append(Problem(node.host, "node name", f"running as {status.get('node')}, not {node.name}",
                                    "renaming a node holding data is a runbook of its own; fix the inventory"))
        if f.running and f.cookie_sha256 and f.cookie_sha256 != cookie.sha256():
            problems.append(Problem(node.host, "cookie", "the running node has another cookie",
                                    "change a live cluster's cookie with `fab rotate-cookie`, not deploy (rerun it if "
                                    "one was interrupted: it resumes)"))
        if f.running and _runs_dist_tls(f) != inv.cluster.dist_tls:
            problems.append(Problem(node.host, "distribution", "the running node's distribution is "
                                    f"{'TLS' if _runs_dist_tls(f) else 'plain TCP'}, the inventory wants "
                                    f"{'TLS' if inv.cluster.dist_tls else 'plain TCP'}",
                                    "the two cannot talk, so no rolling change: `fab stop-cluster`, then `fab deploy`"))
        configured = _configured_node_name(f)
        if not f.beam_running and f.mnesia_schema and configured and configured != node.name:
            problems.append(Problem(node.host, "node name", f"Mnesia data of {configured} is on this host",
                                    f"starting it as {node.name} would fail: rename or wipe it deliberately"))
    # name resolution and reachability as seen from every host
    for node in inv.nodes:
        f = facts[node.host]
        if not f.reachable:
            continue
        for peer in inv.nodes:
            if peer is node:
                continue
            want = dist_address(peer, facts)
            got = f.resolves.get(peer.node_host)
            if not got:
                problems.append(Problem(node.host, "resolve", f"{peer.node_host} does not resolve",
                                        f"add {peer.node_host} to /etc/hosts or DNS"))
            elif want and got != want:
                problems.append(Problem(node.host, "resolve", f"{peer.node_host} resolves to {got}, "
                                        f"its node listens on {want}", "make name resolution agree on every host"))
            blocked = sorted(port for (h, port), r in f.reach.items()
                             if h == peer.node_host and r in ("timeout", "unreachable"))
            if blocked:
                problems.append(Problem(node.host, "network", f"cannot reach {peer.node_host} on "
                                        f"{_ports(blocked)}",
                                        f"open 4369 and {inv.cluster.port_min}-{inv.cluster.port_max}/tcp "
                                        "between the cluster's nodes"))
    mixed = releases.mixed({n.host: facts[n.host].os_release for n in inv.nodes
                            if facts[n.host].reachable and releases.known(facts[n.host].os_id, facts[n.host].os_version)})
    if mixed:
        problems.append(Problem("*", "release", "the hosts run different operating system releases: " +
                                releases.listed(mixed),
                                "a cluster runs one release (one ejabberd and one Erlang/OTP on every node): put "
                                "every host on the same one. A new host joins a cluster on the cluster's release; "
                                "moving a running cluster from Debian 12 to 13 is an OS move, node by node: pin "
                                "Debian 13's build of the cluster's ejabberd and `fab upgrade` (a move stopped "
                                "half-way: `fab upgrade` again finishes it)"))
        return problems     # every other version check follows from this one
    erlangs = {facts[n.host].erlang_version for n in inv.nodes
               if facts[n.host].reachable and facts[n.host].erlang_version}
    if len(erlangs) > 1:
        problems.append(Problem("*", "version", f"Erlang versions differ: {', '.join(sorted(erlangs))}",
                                "run one Erlang/OTP version across the cluster"))
    return problems


def _ports(ports: list[int]) -> str:
    return ", ".join(map(str, ports)) if len(ports) < 4 else f"{ports[0]}..{ports[-1]} ({len(ports)} ports)"


def _runs_dist_tls(f: HostFacts) -> bool:
    return "-proto_dist inet_tls" in (f.files.get(EJABBERD_DEFAULT) or "")


def _configured_node_name(f: HostFacts) -> str | None:
    text = f.files.get(EJABBERD_DEFAULT) or ""
    for line in text.splitlines():
        if line.startswith("ERLANG_NODE="):
            return line.split("=", 1)[1].strip().strip('"')
    return "ejabberd@localhost" if f.installed else None


# --------------------------------------------------------------------------- the database

@dataclass(frozen=True)
class DbView:
    """What a run knows of cluster.database: the database host's facts (one easycluster
    provisions), the database as each node sees it (logged in as the cluster's role), and
    the password (only its hash is compared)."""
    host: DbHostFacts | None
    sql: dict[str, SqlFacts]
    password: Secret
    let_in: tuple[Node, ...] | None = None   # the nodes pg_hba lets in (None: the plan's inventory's)
    migrating: frozenset[str] = frozenset()  # hosts kept on Mnesia, connected (fab migrate-to-sql)
    replicas: dict[str, ReplicaFacts] = field(default_factory=dict)   # a replicated database's members
    replication: Secret | None = None        # their replication role's password


def sql_in_use(f: HostFacts) -> bool:
    """The node's ejabberd.yml keeps its persistent data in the database (default_db: sql)."""
    return "\ndefault_db: sql\n" in (f.files.get(EJABBERD_YML) or "")


def data_in_sql(inv: Inventory, facts: dict[str, HostFacts]) -> list[Problem]:
    """No cluster.database in the inventory, but nodes configured to keep their data in one:
    a deploy would switch them to Mnesia, which does not hold it."""
    on_sql = [n.host for n in inv.nodes if facts[n.host].reachable and sql_in_use(facts[n.host])]
    if not on_sql:
        return []
    return [Problem("*", "database", f"the cluster's data is in PostgreSQL (default_db: sql in ejabberd.yml on "
                    f"{', '.join(on_sql)}) and the inventory has no cluster.database: a deploy would switch the "
                    "nodes to Mnesia, which holds none of the accounts",
                    "put cluster.database back in the inventory; easycluster does not move data from PostgreSQL "
                    "back into Mnesia")]


def plan_database(inv: Inventory, facts: dict[str, HostFacts], db: DbView) -> tuple[list[Step], list[Problem]]:
    """The database host made what the inventory says (PostgreSQL, its listen address and
    pg_hba lines for the nodes, the role and its password, the database), then ejabberd's
    schema loaded; and what must stop the run first: a database host in no state to be
    provisioned, a node that cannot log in (when nothing is left to provision), a database
    holding another cluster's data, or a cluster whose data is still in Mnesia."""
    d = inv.cluster.database
    assert d is not None
    steps: list[Step] = []
    problems: list[Problem] = []
    where = d.managed_host or (d.replicas[0] if d.replicated else d.server)
    if d.replicated:
        steps, problems = plan_replicas(inv, facts, db)
    if d.managed:
        hf = db.host
        assert hf is not None
        trouble = database_host_problem(where, hf)
        if trouble:
            problems.append(trouble)
        elif not hf.resolve or hf.resolve not in hf.addresses:
            problems.append(Problem(where, "resolve", f"{d.server} " + (
                f"resolves to {hf.resolve} there, not an address of the host" if hf.resolve else
                "does not resolve on the database host"),
                "set cluster.database.address to the address the nodes reach it at (listen_addresses uses it)"))
        else:
            addresses = [(n, dist_address(n, facts)) for n in (db.let_in or inv.nodes)]
            conf, hba = host_files(inv, [(n, a) for n, a in addresses if a], hf.resolve)
            if not hf.postgresql:
                steps.append(Step(DATABASE, where, "install PostgreSQL (Debian's postgresql, under its systemd unit)",
                                  action=DB_INSTALL))
            if hf.conf != conf:
                path = f"{_pg_dir(hf)}/conf.d/easycluster.conf"
                steps.append(Step(DATABASE, where, f"write {path} (listen address)", action=DB_CONF,
                                  diff=file_diff(hf.conf, conf, "easycluster.conf"),
                                  file=ManagedFile(path, conf, 0o644, "postgres", "postgres", restart=True)))
            if hf.hba != hba:
                path = f"{_pg_dir(hf)}/pg_hba.conf"
                steps.append(Step(DATABASE, where, f"write easycluster's lines of {path} (the nodes)", action=DB_HBA,
                                  diff=file_diff(hf.hba or None, hba, "pg_hba.conf"),
                                  file=ManagedFile(path, hba, 0o640, "postgres", "postgres", restart=False)))
            if not hf.role or hf.password_sha256 != db.password.sha256():
                what = (f"set the password of role {d.user} (the secrets file's)" if hf.role else
                        f"create role {d.user} (login, SCRAM)")
                steps.append(Step(DATABASE, where, f"{what}: given as a SCRAM verifier, the password stays here",
                                  action=DB_ROLE))
            if not hf.owner:
                steps.append(Step(DATABASE, where, f"create database {d.name} owned by {d.user} (UTF8)",
                                  action=DB_CREATE))
            elif hf.owner != d.user:
                problems.append(Problem(where, "database", f"database {d.name} belongs to {hf.owner}, not {d.user}",
                                        "give the cluster a database of its own (cluster.database.name)"))
    provisioning = bool(steps) or bool(problems)
    seen = [s for s in db.sql.values() if s.ok]
    for node in inv.nodes:
        s = db.sql.get(node.host)
        if s is not None and not s.ok and not provisioning:
            problems.append(Problem(node.host, "database", s.error or "?",
                                    "check the server and port, its pg_hba.conf (this node's address), the role "
                                    "and its password (cluster.database)"))
    marker = next((s.marker for s in seen if s.marker), None)
    if marker and marker != inv.cluster.name:
        problems.append(Problem(where, "database", f"{d.where} holds the data of cluster {marker!r}",
                                "point cluster.database at this cluster's own database; never share one"))
    elif not marker and any(s.ejabberd_tables for s in seen):
        users = max((s.users or 0) for s in seen)
        problems.append(Problem(where, "database", f"{d.where} has ejabberd's tables ({users} accounts), "
                                "not loaded by easycluster for this cluster",
                                "give the cluster an empty database: easycluster loads ejabberd's schema itself"))
    elif not marker:
        steps.append(Step(DATABASE, inv.nodes[0].host, f"load ejabberd's schema (pg.new.sql of the installed "
                                                       f"package, from {inv.nodes[0].host}) into {d.where}",
                          action=DB_SCHEMA))
    in_mnesia = {n.host: (facts[n.host].cluster_status or {}).get("registered_users", 0) for n in inv.nodes
                 if facts[n.host].running and not sql_in_use(facts[n.host]) and n.host not in db.migrating}
    if any(in_mnesia.values()):
        problems.append(Problem("*", "database", f"the cluster's data is in Mnesia ({max(in_mnesia.values())} "
                                "accounts): switching the nodes to the database would hide it",
                                "`fab migrate-to-sql` moves it into the database, then switches the nodes"))
    return steps, problems


def database_host_problem(where: str, f: DatabaseHost) -> Problem | None:
    """A host easycluster would provision PostgreSQL on, in no state for it: unreachable, or not a
    Debian release easycluster knows running systemd."""
    if not f.reachable:
        return Problem(where, "ssh", f.error or "unreachable",
                       "check the database host is up and that ssh_config, user and key are right")
    if not f.systemd or not releases.known(f.os_id, f.os_version):
        return Problem(where, "os", f"{releases.describe(f.os_id, f.os_version)}{'' if f.systemd else ', no systemd'}",
                       f"a database host runs Debian's PostgreSQL under systemd: {releases.supported()}")
    return None


def plan_replicas(inv: Inventory, facts: dict[str, HostFacts], db: DbView) -> tuple[list[Step], list[Problem]]:
    """The replicated database's members made what the inventory says: PostgreSQL, Patroni and
    etcd on each (one release: their PostgreSQL must replicate), easycluster's etcd settings and
    Patroni configuration (pg_hba: the members for replication, the nodes for the database),
    their units running; then the role and database on the primary."""
    d = inv.cluster.database
    steps: list[Step] = []
    problems: list[Problem] = []
    found = [(h, db.replicas.get(h)) for h in d.replicas]
    for h, rf in found:
        trouble = database_host_problem(h, rf or ReplicaFacts(h, error="no answer"))
        if trouble:
            problems.append(trouble)
        elif not rf.resolve or rf.resolve not in rf.addresses:
            problems.append(Problem(h, "resolve", f"{h} " + (f"resolves to {rf.resolve} there, not an address of "
                                                             "the host" if rf.resolve else "does not resolve there"),
                                    "make the host's name resolve to its own address (etcd and Patroni listen there)"))
        elif rf.debian_clusters:
            problems.append(Problem(h, "postgresql", f"PostgreSQL cluster {', '.join(rf.debian_clusters)} of Debian's "
                                    "own runs here (pg_lsclusters)", "a member's only PostgreSQL is the one Patroni "
                                    "makes: give the replicated database hosts of its own"))
    if problems:
        return steps, problems
    versions = sorted({rf.os_version for _, rf in found})
    if len(versions) > 1:
        return steps, [Problem("database", "os", f"the database hosts run Debian {' and '.join(versions)}",
                               "one release on every member: PostgreSQL "
                               f"{' and '.join(releases.POSTGRESQL.get(v, '?') for v in versions)} do not replicate "
                               "to each other")]
    pg_major = releases.POSTGRESQL[versions[0]]
    members = [Member(h, rf.resolve) for h, rf in found]
    quorum = etcd_members(rf for _, rf in found)
    named = {m.name for m in quorum}
    strangers = etcd_strangers(quorum, {h: rf.resolve for h, rf in found})
    if strangers:
        return steps, [Problem("database", "members", f"{m.name or 'a member never started'} "
                               f"({', '.join(m.peer_urls)}) is in the quorum store but not in cluster.database.hosts",
                               f"take it out first: fab remove-database-host --host {m.name or m.hex_id}")
                       for m in strangers]
    holding = [h for h, rf in found if rf.etcd_data]
    if holding and not quorum and len(holding) * 2 <= len(found):
        return steps, [Problem("database", "quorum", f"the quorum store (etcd) has no majority: its data is on "
                               f"{', '.join(holding)} only, of {len(found)} members",
                               "bring the members that held it back (boot them); if they are lost for good: "
                               f"fab force-database-quorum --host {holding[0]} (docs/runbooks/database-failover.md)")]
    joining = [x for x in members if quorum and x.host not in named]
    nodes = [(n, a) for n in (db.let_in or inv.nodes) for a in [dist_address(n, facts)] if a]
    assert db.replication is not None, "a replicated database needs its replication password"
    for member, (h, rf) in zip(members, found):
        etcd, patroni, *firewall = replica_files(inv, member, members, nodes, db.replication, pg_major)
        if not rf.installed:
            steps.append(Step(DATABASE, h, f"install PostgreSQL {pg_major}, Patroni and etcd (Debian's)",
                              action=DB_INSTALL))
        if rf.etcd_conf != etcd.content:
            steps.append(Step(DATABASE, h, f"write {etcd.path} (etcd: the quorum store's member)", action=DB_ETCD,
                              diff=file_diff(rf.etcd_conf, etcd.content, "etcd"), file=etcd))
        if rf.patroni_sha256 != patroni.sha256():
            steps.append(Step(DATABASE, h, f"write {patroni.path} (Patroni; content redacted: it holds the "
                                           "replication password)", action=DB_PATRONI, file=patroni))
        elif not (rf.etcd_active and rf.patroni_active) and member not in joining:
            steps.append(Step(DATABASE, h, "start etcd and Patroni", action=DB_START))
        for f in firewall:
            if rf.files.get(f.path) != f.content:
                steps.append(Step(DATABASE, h, f"write {f.path} (the member's firewall: etcd for the members, "
                                               "PostgreSQL and Patroni for the members and the nodes)",
                                  action=DB_FIREWALL, diff=file_diff(rf.files.get(f.path), f.content, f.path), file=f))
    for i, member in enumerate(joining):   # after every running member let it in
        endpoints = tuple(x.client_url for x in members if x.host in named) + tuple(x.client_url for x in joining[:i])
        steps.append(Step(DATABASE, member.host, "join the running quorum store (etcd member add, then start); "
                                                 "Patroni copies the primary (basebackup) and follows it",
                          action=DB_JOIN, peer_url=member.peer_url, endpoints=endpoints))
    primary = next((rf for _, rf in found if rf.primary), None)
    if primary is None or not primary.role or primary.password_sha256 != db.password.sha256():
        what = (f"set the password of role {d.user} (the secrets file's)" if primary and primary.role else
                f"create role {d.user} (login, SCRAM)")
        steps.append(Step(DATABASE, "primary", f"{what}: given as a SCRAM verifier, the password stays here",
                          action=DB_ROLE))
    if primary is None or not primary.owner:
        steps.append(Step(DATABASE, "primary", f"create database {d.name} owned by {d.user} (UTF8)", action=DB_CREATE))
    elif primary.owner != d.user:
        problems.append(Problem("primary", "database", f"database {d.name} belongs to {primary.owner}, not {d.user}",
                                "give the cluster a database of its own (cluster.database.name)"))
    return steps, problems


def _pg_dir(hf: DbHostFacts) -> str:
    return f"/etc/postgresql/{hf.cluster}" if hf.cluster else "/etc/postgresql/VERSION/main"


def file_diff(current: str | None, new: str, name: str) -> str:
    """A file's change as the plan shows it: a unified diff from what the host has (None: no file)."""
    return "".join(difflib.unified_diff(
        (current or "").splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"{name} (on host)" if current is not None else "/dev/null", tofile=f"{name} (new)"))


# --------------------------------------------------------------------------- membership

def choose_seed(inv: Inventory, facts: dict[str, HostFacts]) -> tuple[Node, set[str]]:
    """The running member others join, and the cluster's members (db_nodes) as it reports them.

    The largest running cluster among the inventory's nodes wins; ties go to the
    one holding the earliest node in inventory order. With nothing running, the
    first node is the seed and membership is known only once nodes start.
    """
    best: tuple[int, int] | None = None
    seed, members = inv.nodes[0], set()
    names = {n.name for n in inv.nodes}
    for i, node in enumerate(inv.nodes):
        status = facts[node.host].cluster_status if facts[node.host].running else None
        if not status or node.satellite or status.get("schema") == "ram_copies":
            continue   # a satellite never seeds: it holds no copy to join from
        db_nodes = set(status.get("db_nodes", [node.name]))
        score = (len(db_nodes & names), -i)
        if best is None or score > best:
            best, seed, members = score, node, db_nodes
    return seed, members


def plan_joins(inv: Inventory, facts: dict[str, HostFacts],
               leaving: tuple[str, ...] = ()) -> tuple[list[Step], list[Problem]]:
    """Joins of masters (a satellite joins by starting: SATELLITE steps). `leaving`: hosts
    taken out of the cluster earlier in the run (a role change), members no more."""
    seed, members = choose_seed(inv, facts)
    members = members - {inv.node(h).name for h in leaving}
    steps, problems = [], []
    for node in inv.nodes:
        if node is seed or node.name in members or node.satellite:
            continue
        f = facts[node.host]
        status = f.cluster_status if f.running else None
        if status and len(status.get("db_nodes", [])) > 1:
            problems.append(Problem(node.host, "membership", f"member of another cluster "
                                    f"({', '.join(sorted(status['db_nodes']))})",
                                    "remove it from that cluster first; deploy never merges two clusters"))
            continue
        users = (status or {}).get("registered_users", 0)
        if users:
            problems.append(Problem(node.host, "membership", f"standalone node holding {users} registered users",
                                    "joining would erase them: back them up and wipe the node deliberately"))
            continue
        steps.append(Step(JOIN, node.host, f"join {node.name} to {seed.name} as master", seed=seed.name))
    return steps, problems


# --------------------------------------------------------------------------- plan

def members_of(inv: Inventory, facts: dict[str, HostFacts]) -> list[str]:
    """The addresses the firewall lets reach epmd and the distribution: every node's of `inv`."""
    return [a for a in (dist_address(n, facts) for n in inv.nodes) if a]


def make_plan(inv: Inventory, facts: dict[str, HostFacts], cookie: Secret,
              tls: dict[str, NodeTLS] | None = None, members: list[str] | None = None,
              db: DbView | None = None) -> Plan:
    """`members`: the addresses the firewall lets in (default: every node of `inv`); `db`:
    what is known of cluster.database (required with one)."""
    resets = package_nodes(inv, facts)
    facts = as_reset(facts, resets)
    problems = preflight(inv, facts, cookie)
    db_steps: list[Step] = []
    if inv.cluster.database:
        assert db is not None, "a cluster.database needs its facts (DbView)"
        db_steps, db_problems = plan_database(inv, facts, db)
        problems += db_problems
    else:
        problems += data_in_sql(inv, facts)
    converts = role_changes(inv, facts) if not problems else []
    notes = role_notes(inv)
    seed, _ = choose_seed(inv, facts)
    if problems:
        return Plan([], seed, problems, notes)
    steps: list[Step] = db_steps + [Step(RESET, h, f"reset {PACKAGE_NODE}, which the package started before easycluster "
                                        "configured it: stop it, keep its Mnesia directory in a tarball")
                         for h in resets]
    for h in converts:
        node = inv.node(h)
        other = "satellite" if node.role == "master" else "master"
        steps.append(Step(ROLE, h, f"make {node.name} a {node.role} (it is a {other}) -- drain and stop it, take it "
                                   f"out of the schema on {seed.name}, empty its Mnesia directory (kept in a "
                                   f"tarball); it comes back as a {node.role} below"))
    facts = as_reset(facts, converts)
    plugin_sha = plugin_sha256()
    members = members_of(inv, facts) if members is None else members
    for node in inv.nodes:
        f = facts[node.host]
        extra = packages(inv)
        missing = ((["nftables (the firewall of epmd and the distribution)"] if not f.nft else []) +
                   (["erlang-p1-pgsql (ejabberd's PostgreSQL driver)"] if "erlang-p1-pgsql" in extra
                    and not f.pgsql_driver else []) +
                   (["postgresql-client (pg_dump, for fab backup)"] if "postgresql-client" in extra
                    and not f.pg_client else []) +
                   (["haproxy (the way to the database's primary)"] if "haproxy" in extra and not f.haproxy else []) +
                   (["prometheus-node-exporter (the node's metrics)"] if "prometheus-node-exporter" in extra
                    and not f.node_exporter else []))
        if not f.installed:
            steps.append(Step(INSTALL, node.host, f"install ejabberd {inv.cluster.ejabberd_version}, "
                                                  + ", ".join(("nftables",) + extra)))
        elif missing:
            steps.append(Step(INSTALL, node.host, "install " + ", ".join(missing)))
        restart = reload = False
        for mf in managed_files(inv, node, dist_address(node, facts) or "", cookie, (tls or {}).get(node.name),
                                members, db.password if db else None,
                                sql_default=not db or node.host not in db.migrating):
            diff = file_change(mf, f)
            if diff is None:
                continue
            if mf.restart and settled_by_reload(mf.path, f.files.get(mf.path), mf.content):
                mf = replace(mf, restart=False)   # also for the marker its write leaves (configure.sh)
            steps.append(Step(WRITE, node.host, f"write {mf.path}", diff=diff, file=mf))
            if not mf.live:
                restart |= mf.restart
                reload |= not mf.restart
        if f.plugin_sha256 != plugin_sha:
            steps.append(Step(PLUGIN, node.host, "install the easy_cluster plugin (compiled once, or a member's "
                                                 "beams; shared where the packages are the same)"))
            restart = True
        if not f.running and node.satellite:
            steps.append(Step(SATELLITE, node.host, f"start {node.name} as a satellite (it joins through its "
                                                    "masters, holding no disc copy)"))
        elif not f.running:
            steps.append(Step(START, node.host, f"start {node.name}"))
        elif restart:
            steps.append(Step(RESTART, node.host, f"restart {node.name} (its configuration changed)"))
        elif f.restart_pending:
            steps.append(Step(RESTART, node.host, f"restart {node.name} (left pending by an earlier run)"))
        elif reload:
            steps.append(Step(RELOAD, node.host, f"reload {node.name}'s ejabberd.yml (no restart)"))
    joins, join_problems = plan_joins(inv, facts, tuple(converts))
    if join_problems:
        return Plan([], seed, join_problems, notes)
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    steps = sorted(steps + joins, key=lambda s: order[s.kind])  # stable: inventory order within a phase
    return Plan(mark_boot_joins(inv, steps, facts), seed, notes=notes)


def role_notes(inv: Inventory) -> list[str]:
    masters = inv.masters
    if inv.satellites and len(masters) < 2:
        return [f"one master only ({masters[0].name}): while it is down, the satellites serve no stored data "
                "(logins fail); two or more masters are advised"]
    return []


def mark_boot_joins(inv: Inventory, steps: list[Step], facts: dict[str, HostFacts]) -> list[Step]:
    """Joins done while the joining node starts for the first time (one boot) rather than by
    a standalone start and a join that restarts it: when every joining node is new (no Mnesia
    data, no VM) and starts in this run, the seed runs already or is new too, no started node
    brings data of its own (membership would be known only once it runs) and nothing restarts."""
    joins = [s for s in steps if s.kind == JOIN]
    starts = {s.host for s in steps if s.kind == START}
    restarts = [s for s in steps if s.kind == RESTART and not inv.node(s.host).satellite]   # satellites: after
    if not joins or restarts or any(facts[h].mnesia_schema for h in starts):
        return steps
    seed = inv.node(joins[0].seed)
    if not (facts[seed.host].running or seed.host in starts):
        return steps
    if any(s.host not in starts or facts[s.host].beam_running for s in joins):
        return steps
    return [replace(s, at_boot=True, summary=f"{s.summary}, during its first start")
            if s.kind == JOIN and not s.at_boot else s for s in steps]


_TICKTIME = re.compile(r"net_ticktime \d+")


def settled_by_reload(path: str, old: str | None, new: str | Secret) -> bool:
    """A change of /etc/default/ejabberd in its comments or net_ticktime only: no restart. The
    running node takes the new net_ticktime from ejabberd.yml's reload (with a transition
    period, on every node at once); the file's is for its next boot and ejabberdctl. A restart
    instead would boot a node at the new value among peers at the old one, which is how a
    tick is missed (see the template)."""
    if path != EJABBERD_DEFAULT or old is None or isinstance(new, Secret):
        return False

    def meaning(text: str) -> list[str]:
        return [_TICKTIME.sub("net_ticktime N", line) for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    return meaning(old) == meaning(new)


def file_change(mf: ManagedFile, f: HostFacts) -> str | None:
    """None if the host already has this content; else a unified diff (secrets: a note)."""
    if mf.secret:
        current = f.cookie_sha256 if mf.path == COOKIE_PATH else f.secret_sha256.get(mf.path)
        if current == mf.sha256():
            return None
        return f"{mf.path}: {'replaced' if current else 'created'} (content redacted)\n"
    current = f.files.get(mf.path)
    new = mf.data().decode()
    return None if current == new else file_diff(current, new, mf.path)


def format_plan(plan: Plan, inv: Inventory) -> str:
    notes = [f"note: {n}" for n in plan.notes]
    if not plan.steps:
        return "\n".join(notes + ["no changes: the cluster matches the inventory"])
    out = notes
    for s in plan.by_kind(DATABASE):
        tag = f"database, via {s.host}" if s.action == DB_SCHEMA else f"database {s.host}"
        out.append(f"[{tag}] {s.summary}")
        out.extend(f"[{tag}]   {line}" for line in s.diff.rstrip("\n").splitlines())
    for node in inv.nodes:
        mine = [s for s in plan.steps if s.host == node.host and s.kind not in (JOIN, DATABASE)]
        if not mine:
            out.append(f"[{node.host}] no changes")
            continue
        for s in mine:
            out.append(f"[{node.host}] {s.summary}")
            out.extend(f"[{node.host}]   {line}" for line in s.diff.rstrip("\n").splitlines())
    joins = plan.by_kind(JOIN)
    if joins:
        out.append("joins, one at a time, in this order:")
        out.extend(f"  {i}. {s.summary}" for i, s in enumerate(joins, 1))
    satellites = plan.by_kind(SATELLITE)
    if satellites:
        out.append("then the satellites, one at a time: " + ", ".join(inv.node(s.host).name for s in satellites))
    return "\n".join(out)
