"""Cluster health from the nodes' own reports (easy_cluster_status): pure, testable."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import releases
from .errors import EasyClusterError
from .facts import HostFacts, etcd_members, etcd_strangers, patroni_list
from .inventory import Inventory
from .progress import Out, count


@dataclass
class NodeHealth:
    name: str
    host: str
    reachable: bool
    running: bool
    member: bool
    master: bool
    db_nodes: list[str]
    running_db_nodes: list[str]
    missing_tables: list[str]
    sessions: int | None
    started_at: int | None
    ejabberd_version: str | None
    otp_release: str | None
    plugin_version: str | None
    registered_users: int | None = None
    master_nodes: list[str] = field(default_factory=list)      # set by a heal; cleared when it ends
    partitioned_with: list[str] = field(default_factory=list)  # Mnesia reported a partition with these
    seen_running_by: list[str] = field(default_factory=list)   # running peers whose running_db_nodes hold it
    unit: str = "-"                     # ejabberd.service: 'active (running)', 'activating (auto-restart)', ...
    restarts: int = 0                   # NRestarts: times systemd restarted the node by itself
    journal: list[str] = field(default_factory=list)           # the unit's last lines, when not running cleanly
    role: str = "master"                # the inventory's: master or satellite
    disc_tables: list[str] = field(default_factory=list)       # tables it holds on disc (a satellite: none)
    os_release: str = ""                # 'Debian 13 (trixie)'
    os: str = ""                        # 'Debian 13', as the table prints it
    erlang_version: str | None = None   # erlang-base's package version (installed, running or not)

    @property
    def satellite(self) -> bool:
        return self.role == "satellite"

    @property
    def in_role(self) -> bool:
        """Running as its role wants: a master with a copy of every table, a satellite with none on disc."""
        if self.satellite:
            return self.running and not self.disc_tables
        return self.master

    @property
    def unit_ok(self) -> bool:
        """Its ejabberd.service is active (running), or there is no unit to read (unreachable)."""
        return self.unit == "-" or self.unit.startswith("active (running)")

    def as_dict(self) -> dict:
        return dict(self.__dict__, seen_running_by=list(self.seen_running_by), in_role=self.in_role)


@dataclass
class ClusterHealth:
    nodes: list[NodeHealth]
    problems: list[str] = field(default_factory=list)
    tables: dict[str, dict[str, str]] = field(default_factory=dict)   # table -> node -> storage type
    departed: dict[str, tuple[str, str]] = field(default_factory=dict)  # node -> (how, when): left on purpose
    database: dict | None = None   # cluster.database as the nodes see it (database_health)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def partitioned(self) -> bool:
        """Running nodes disagree on who runs, or Mnesia reported a partition since (the link may
        be back and every node see every other, with data that diverged meanwhile)."""
        views = {tuple(sorted(n.running_db_nodes)) for n in self.nodes if n.running}
        return len(views) > 1 or any(n.partitioned_with for n in self.nodes if n.running)

    def as_dict(self) -> dict:
        return {"healthy": self.healthy, "partitioned": self.partitioned, "problems": self.problems,
                "mixed_versions": mixed_versions(self.nodes), "mixed_releases": mixed_releases(self.nodes),
                "nodes": [n.as_dict() for n in self.nodes], "database": self.database,
                "departed": {name: {"how": how, "when": when} for name, (how, when) in self.departed.items()}}


def replication_gap(roles: list[tuple[str, str]]) -> str | None:
    """What a replicated database lacks, from its members' (role, state) as Patroni lists them
    (lower case): "primary" (none running), "synchronous standby" (none streaming), or None."""
    if not any(r == "leader" and s == "running" for r, s in roles):
        return "primary"
    if not any(r == "sync standby" and s in ("streaming", "running") for r, s in roles):
        return "synchronous standby"
    return None


def replica_health(inv: Inventory, replicas: dict) -> tuple[list[dict], list[str]]:
    """A replicated database's members (facts.ReplicaFacts per host): each one's role, state and
    lag as Patroni lists them (asked on the first member that answers), and whether its etcd
    runs; problems: a member down or not streaming, no primary, no synchronous standby, etcd
    short of its quorum."""
    listed = patroni_list(replicas.values())
    by_name = {str(m.get("Member")): m for m in listed}
    members, problems = [], []
    for host in inv.cluster.database.replicas:
        f, m = replicas.get(host), by_name.get(host, {})
        role, state = str(m.get("Role", "")).lower(), str(m.get("State", "")).lower()
        lag = m.get("Lag in MB")
        members.append({"host": host, "role": role or None, "state": state or None, "lag_mb": lag,
                        "etcd": bool(f and f.etcd_active), "reachable": bool(f and f.reachable),
                        "patroni": bool(f and f.reachable and f.patroni_active)})
        if f is None or not f.reachable:
            problems.append(f"database member {host}: unreachable ({f.error if f else 'no answer'})")
        elif not f.patroni_active:
            problems.append(f"database member {host}: Patroni is not running")
        elif state not in ("running", "streaming"):
            problems.append(f"database member {host}: {state or 'not listed by Patroni'}")
    # Patroni's list can be stale (read from one member's etcd, without its quorum): a member
    # that does not answer, or runs no Patroni, is no running primary or standby, whatever it says
    gap = replication_gap([(m["role"] or "", m["state"] or "") for m in members if m["patroni"]])
    if gap == "primary":
        problems.append("the replicated database has no primary: no write succeeds")
    elif gap:
        problems.append("the replicated database has no synchronous standby: the primary alone holds the "
                        "newest writes, and its loss would lose them")
    strangers = [m.name or m.hex_id for m in etcd_strangers(
        etcd_members(replicas.values()), {h: (replicas[h].resolve if replicas.get(h) else None)
                                          for h in inv.cluster.database.replicas})]
    problems += [f"etcd holds {x}, which cluster.database.hosts does not list: fab remove-database-host --host {x}"
                 for x in strangers]
    running = sum(1 for m in members if m["etcd"])
    if running < len(members):
        quorum = len(members) // 2 + 1
        problems.append(f"etcd (Patroni's quorum store) runs on {running} of {len(members)} database hosts"
                        + (f": below its quorum of {quorum}, no failover can happen" if running < quorum else ""))
    return members, problems


def database_health(inv: Inventory, sql: dict, replicas: dict | None = None) -> tuple[dict, list[str]]:
    """cluster.database as each node sees it (facts.SqlFacts per host): where it is, the
    server's version and the database's size, who reaches it; a problem per node that cannot
    log in (its clients cannot log in either)."""
    d = inv.cluster.database
    ok = [s for s in sql.values() if s.ok]
    info = {"where": d.where, "host": d.managed_host, "external": not d.managed,
            "version": ok[0].version if ok else None, "size_bytes": ok[0].size if ok else None,
            "accounts": ok[0].users if ok else None,
            "reachable_from": sorted(h for h, s in sql.items() if s.ok),
            "errors": {h: s.error for h, s in sorted(sql.items()) if not s.ok}}
    problems = [f"{h}: cannot use the database: {s.error}" for h, s in sorted(sql.items()) if not s.ok]
    if d.replicated and replicas is not None:
        info["members"], more = replica_health(inv, replicas)
        problems += more
    return info, problems


def assess(inv: Inventory, facts: dict[str, HostFacts], sql: dict | None = None,
           replicas: dict | None = None) -> ClusterHealth:
    """Healthy: every inventory node running, a member in everyone's view, and a master
    (a local copy of every table, with the same storage type as on the others); with
    cluster.database, every reachable node able to log in to it (`sql`: facts.SqlFacts
    per host)."""
    names = [n.name for n in inv.nodes]
    nodes, problems = [], []
    tables: dict[str, dict[str, str]] = {}
    for node in inv.nodes:
        f = facts[node.host]
        st = f.cluster_status if f.running else None
        nh = NodeHealth(
            name=node.name, host=node.host, reachable=f.reachable, running=bool(st),
            member=False, master=bool(st and st.get("master")),
            db_nodes=sorted(st.get("db_nodes", [])) if st else [],
            running_db_nodes=sorted(st.get("running_db_nodes", [])) if st else [],
            missing_tables=sorted(st.get("missing_tables", [])) if st else [],
            sessions=st.get("sessions") if st else None, started_at=st.get("started_at") if st else None,
            ejabberd_version=f.ejabberd_version, otp_release=st.get("otp_release") if st else None,
            plugin_version=st.get("plugin_version") if st else None,
            master_nodes=sorted(st.get("master_nodes", [])) if st else [],
            partitioned_with=sorted(st.get("partitioned_with", [])) if st else [],
            registered_users=st.get("registered_users") if st else None,
            unit=f.unit_state, restarts=f.restarts, journal=f.journal, role=node.role,
            disc_tables=disc_tables(st, node.name),
            os_release=f.os_release if f.reachable else "", os=releases.short(f.os_id, f.os_version) if f.reachable else "",
            erlang_version=f.erlang_version)
        nodes.append(nh)
        if st:
            for table, holders in st.get("tables", {}).items():
                tables.setdefault(table, {}).update(holders)
    for nh in nodes:
        if not nh.reachable:
            problems.append(f"{nh.host}: unreachable over SSH")
            continue
        f = facts[nh.host]
        unit_problem = _unit_problem(nh, f)
        if not nh.running:
            problems.append(unit_problem or f"{nh.name}: not running")
            continue
        if unit_problem:
            problems.append(unit_problem)
        missing = [n for n in names if n not in nh.running_db_nodes]
        if missing:
            problems.append(f"{nh.name}: does not see {', '.join(missing)} running")
        extra = [n for n in nh.db_nodes if n not in names]
        if extra:
            problems.append(f"{nh.name}: its cluster has nodes outside the inventory: {', '.join(extra)}")
        if nh.partitioned_with:
            problems.append(f"{nh.name}: Mnesia reported a partition with {', '.join(nh.partitioned_with)}: "
                            "their data may differ (`fab heal --winner NODE` keeps one side's)")
        if nh.master_nodes:
            problems.append(f"{nh.name}: loads its tables only from {', '.join(nh.master_nodes)} at its next start "
                            "(master nodes left set: `fab heal` clears them)")
        if nh.satellite:
            if nh.disc_tables:
                problems.append(f"{nh.name}: a satellite holding disc copies ({', '.join(nh.disc_tables[:5])}"
                                f"{', ...' if len(nh.disc_tables) > 5 else ''}): `fab deploy` makes it a satellite again")
            masters_seen = [n for n in inv.masters if n.name in nh.running_db_nodes]
            if not masters_seen:
                problems.append(f"{nh.name}: a satellite with no master running: it cannot serve stored data "
                                "(logins fail) until one is back")
        elif not nh.master:
            problems.append(f"{nh.name}: not a master (no local copy of {', '.join(nh.missing_tables) or 'some tables'})")
    mixed = mixed_versions(nodes)
    if mixed:
        problems.append(MIXED + ": " + "; ".join(f"{v} on {', '.join(hosts)}" for v, hosts in mixed.items()) +
                        " (an upgrade under way or stopped half-way: `fab upgrade` brings every node to the "
                        "pinned version; ejabberd's maintainers advise against running mixed versions)")
    mixed_os = mixed_releases(nodes)
    if mixed_os:
        problems.append(MIXED_RELEASES + ": " + releases.listed(mixed_os) +
                        " (an OS move under way or stopped half-way: `fab upgrade` finishes it; deploy refuses to change a "
                        "cluster of mixed releases)")
    masters_running = {n.name for n in nodes if n.running and not n.satellite}
    if inv.satellites and not masters_running:
        problems.append("no master runs: the satellites hold no data of their own")
    for nh in nodes:
        nh.member = any(nh.name in other.db_nodes for other in nodes if other.running)
        nh.seen_running_by = sorted(o.name for o in nodes if o.running and nh.name in o.running_db_nodes)
    for table, holders in sorted(tables.items()):   # satellites hold no copy: they do not count as replicas
        types = {t for node, t in holders.items() if node in masters_running}
        if len(types) > 1:
            problems.append(f"table {table}: storage types differ across nodes ({', '.join(sorted(types))})")
        absent = [n for n in masters_running if n not in holders]
        if absent and not any(p.startswith(f"{a}: not a master") for a in absent for p in problems):
            problems.append(f"table {table}: no copy on {', '.join(sorted(absent))}")
    database = None
    if inv.cluster.database and sql is not None:
        database, db_problems = database_health(
            inv, {h: s for h, s in sql.items() if facts.get(h) and facts[h].reachable}, replicas)
        problems += db_problems
    return ClusterHealth(nodes, problems, tables, database=database)


def disc_tables(status: dict | None, name: str) -> list[str]:
    """The tables node `name` holds on disc, as a node's easy_cluster_status shows them."""
    return sorted(t for t, holders in ((status or {}).get("tables") or {}).items()
                  if holders.get(name) in ("disc_copies", "disc_only_copies"))


MIXED = "mixed ejabberd versions"
MIXED_RELEASES = "mixed operating system releases"


def mixed_releases(nodes: list[NodeHealth]) -> dict[str, list[str]]:
    """OS release -> hosts, when the reachable nodes do not all run the same one."""
    return releases.mixed({nh.host: nh.os_release for nh in nodes if nh.reachable and nh.os_release})


def mixed_versions(nodes: list[NodeHealth]) -> dict[str, list[str]]:
    """Installed ejabberd version -> hosts, when the nodes do not all have the same one."""
    by_version: dict[str, list[str]] = {}
    for nh in nodes:
        if nh.reachable and nh.ejabberd_version:
            by_version.setdefault(nh.ejabberd_version, []).append(nh.host)
    return by_version if len(by_version) > 1 else {}


LOOP_WINDOW = 600   # seconds: systemd's restarts are a loop while the unit's last start is this recent


def restart_loop(restarts: int, started_ago: int | None) -> bool:
    """Does systemd restart the node in a loop? Only if it restarted it (NRestarts) and the
    unit's last start is recent (`started_ago`, seconds; None: unknown). NRestarts counts every
    restart since the unit was last started by hand, which may be weeks ago: crashes hours
    apart, each followed by a good restart, are no loop (`fab status` shows the count)."""
    return restarts > 0 and started_ago is not None and started_ago <= LOOP_WINDOW


def _ago(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _unit_problem(nh: NodeHealth, f: HostFacts) -> str | None:
    """What is wrong with the node's ejabberd.service, if anything: a node answering while its
    unit is not active (running) is draining, stopping or about to be killed; a unit that
    systemd keeps restarting, each start soon after the last, is a loop, not a slow start."""
    if not f.unit or f.unit.get("LoadState") != "loaded" or f.unit_running:
        return None
    last = f" (journal: {f.journal[-1].strip()})" if f.journal else ""
    active, sub = f.unit.get("ActiveState"), f.unit.get("SubState")
    if sub == "auto-restart":
        started = f", last started {_ago(f.unit_started_ago)} ago" if f.unit_started_ago is not None else ""
        if restart_loop(f.restarts, f.unit_started_ago):
            return (f"{nh.name}: ejabberd.service is restarting in a loop ({count(f.restarts, 'restart')} by systemd"
                    f"{started}, now {f.unit_state}){last}")
        return (f"{nh.name}: ejabberd.service died and systemd is starting it again ({count(f.restarts, 'restart')} so "
                f"far{started}, now {f.unit_state}){last}")
    if active == "activating" and not nh.running:
        return (f"{nh.name}: ejabberd.service is still starting ({f.unit_state}): ejabberd waits for its tables "
                f"(after a full outage: for the node that stopped last) or for its join{last}")
    if active == "failed":
        return f"{nh.name}: ejabberd.service failed ({f.unit_state}){last}"
    if nh.running or active != "inactive":
        return f"{nh.name}: ejabberd.service is {f.unit_state}, not active (running){last}"
    return None


# --------------------------------------------------------------------------- departed nodes

def departed(facts: dict[str, HostFacts]) -> dict[str, tuple[str, str]]:
    """Nodes taken out on purpose (remove-node, forget-node), as any host records them
    (membership.record_departure)."""
    found: dict[str, tuple[str, str]] = {}
    for f in facts.values():
        for name, entry in f.departed.items():
            if name not in found or entry[1] > found[name][1]:
                found[name] = entry
    return found


def without_departed(inv: Inventory, facts: dict[str, HostFacts], out: Out) -> Inventory:
    gone = departed(facts)
    keep = [n for n in inv.nodes if n.name not in gone]
    for n in inv.nodes:
        if n.name in gone:
            how, when = gone[n.name]
            out(f"note: {n.name} was {how} on {when}; deploy leaves it out "
                f"(`fab add-master --host {n.host}` brings it back; or delete it from the inventory)")
    if not keep:
        raise EasyClusterError("every node of the inventory was removed from the cluster")
    return replace(inv, nodes=tuple(keep)) if len(keep) != len(inv.nodes) else inv
