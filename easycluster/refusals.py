"""What each command refuses, decided from facts alone: pure, tested as data without hosts.

A command that changes a running cluster first reads the facts (HostFacts per host, or the
ClusterHealth assessed from them) and then calls the function named after it here, before it
changes anything. The function either raises the error the operator reads (the class and the
words the command always raised) or returns what the command goes on with: the survivors of a
removal, the sides of a partition, the nodes to restart... The command itself only gathers the
facts and acts.

    remove-node       remove_node(inv, facts, node)                    membership.remove_node
    forget-node       forget_node(inv, facts, node)                    membership.forget_node
    heal              heal(inv, health, winner)                        heal.heal
    restore           restore(health), restore_from(path, holders)     restore.restore
    rolling-restart   rolling_restart(inv, health)                     rolling.rolling_restart
    start-cluster     start_cluster(effective, facts, lost),           outage.start_cluster
                      force_load_host(survivors, facts)
    upgrade           upgrade(inv, facts, ufacts, health)              upgrade.plan_upgrade (preflight)
    remove-database-host  remove_database_host(inv, replicas, host)   database_members.remove_database_host
    force-database-quorum force_database_quorum(inv, replicas, host)  database_members.force_database_quorum

Every rule has cases in tests/cases/refusals/ (tests/test_refusals.py), one YAML file each.
This module is of the pure layer (tests/test_layers.py): it reads the inventory, the fact model,
the cluster's health, the errors, plan.Problem and render.release (an ejabberd version's
release), and never reaches remote, nodectl, lock, database, the scripts or the fact gathering.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import EasyClusterError, MembershipError
from .facts import EtcdMember, HostFacts, ReplicaFacts, etcd_members, patroni_list
from . import releases
from .health import MIXED, MIXED_RELEASES, ClusterHealth
from .inventory import Inventory, Node
from .plan import Problem
from .progress import count
from .render import release
from .sql import label as sql_label
from .sql import steps as sql_steps

COPY_MARGIN = 1.2          # the upgrade: room for a copy is the Mnesia directory's size times this


# --------------------------------------------------------------------------- remove-node, forget-node

def running_members(inv: Inventory, facts: dict[str, HostFacts]) -> tuple[list[Node], set[str]]:
    """Nodes of the inventory that run as cluster members, and the cluster's db_nodes."""
    running = [n for n in inv.nodes if facts[n.host].running and facts[n.host].cluster_status]
    db_nodes: set[str] = set()
    for n in running:
        db_nodes |= set(facts[n.host].cluster_status.get("db_nodes", []))
    return running, db_nodes


def sole_copies(node: Node, survivors: list[Node], facts: dict[str, HostFacts]) -> list[str]:
    """Tables of which `node` holds the only copy among the running survivors."""
    holders: dict[str, set[str]] = {}
    for n in survivors + [node]:
        st = facts[n.host].cluster_status if facts[n.host].running else None
        for table, where in (st or {}).get("tables", {}).items():
            holders.setdefault(table, set()).update(where)
    alive = {n.name for n in survivors}
    return sorted(t for t, where in holders.items() if node.name in where and not where & alive)


def running_masters(nodes: list[Node], facts: dict[str, HostFacts]) -> list[Node]:
    return [n for n in nodes if facts[n.host].running and (facts[n.host].cluster_status or {}).get("master")]


def _survivors(inv: Inventory, node: Node, facts: dict[str, HostFacts], verb: str) -> list[Node]:
    running, db_nodes = running_members(inv, facts)
    if node.name not in db_nodes:
        raise MembershipError(f"{node.name} is not in the cluster's schema: nothing to {verb}")
    return [n for n in running if n is not node and n.name in db_nodes]


def remove_node(inv: Inventory, facts: dict[str, HostFacts], node: Node) -> list[Node]:
    """remove-node takes out a running node that neither is the last running master nor holds
    the only running copy of a table. Returns the survivors: the other running members."""
    if facts[node.host].error:
        raise MembershipError(f"{node.host}: {facts[node.host].error} (a dead node is removed with "
                              f"`fab forget-node --host {node.host}`)")
    survivors = _survivors(inv, node, facts, "remove")
    if not facts[node.host].running:
        raise MembershipError(f"{node.name} is not running: remove a stopped node with "
                              f"`fab forget-node --host {node.host}`")
    if not running_masters(survivors, facts):
        raise MembershipError(f"refusing to remove {node.name}: it is the only running master "
                              "(the cluster's data would go with it)")
    sole = sole_copies(node, survivors, facts)
    if sole:
        raise MembershipError(f"refusing to remove {node.name}: it holds the only running copy of "
                              f"{', '.join(sole)}")
    return survivors


def forget_node(inv: Inventory, facts: dict[str, HostFacts], node: Node) -> list[Node]:
    """forget-node takes a dead (stopped or unreachable) member out of the schema, from a running
    master. Returns the survivors: the running members."""
    f = facts[node.host]
    if f.running or (not f.error and f.beam_running):
        raise MembershipError(f"refusing to forget {node.name}: it is running "
                              f"(a running node leaves with `fab remove-node --host {node.host}`)")
    survivors = _survivors(inv, node, facts, "forget")
    if not running_masters(survivors, facts):
        raise MembershipError("no running master to forget it from")
    return survivors


# --------------------------------------------------------------------------- heal

def sides(health: ClusterHealth, winner: str | None = None) -> list[list[str]]:
    """The sides of a partition, largest first (pure): the groups of running nodes that see each
    other; once the link is back and they all do, the winner's side is every node it has no
    partition with."""
    groups: list[list[str]] = []
    running = [n for n in health.nodes if n.running]
    for n in running:
        view = sorted(set(n.running_db_nodes) | {n.name})
        if view not in groups:
            groups.append(view)
    if len(groups) == 1 and winner:
        split = next((set(n.partitioned_with) for n in running if n.name == winner), set())
        if split:
            groups = [sorted(n.name for n in running if n.name not in split),
                      sorted(n.name for n in running if n.name in split)]
    return sorted(groups, key=lambda g: (-len(g), g))


@dataclass(frozen=True)
class HealSides:
    """What a heal goes on with: the named winner, its side (node names) and the nodes that lose."""
    winner: Node
    winning: list[str]
    losers: list[Node]


def heal(inv: Inventory, health: ClusterHealth, winner: str | None) -> HealSides | None:
    """heal needs a partitioned cluster (None: not partitioned, nothing to heal) and, then, a
    winner that runs, named by the operator."""
    win = inv.node(winner) if winner else None
    groups = sides(health, win.name if win else None)
    if not health.partitioned:
        return None
    described = "; ".join("{" + ", ".join(g) + "}" for g in groups) if len(groups) > 1 else "; ".join(
        f"{n.name} saw a partition with {', '.join(n.partitioned_with)}" for n in health.nodes if n.partitioned_with)
    if win is None:
        raise EasyClusterError(f"the cluster is partitioned: {described}\n  name the side whose data is kept: "
                               "`fab heal --winner NODE` (the other side's writes since the split are discarded)")
    winning = next((g for g in groups if win.name in g), None)
    if winning is None:
        raise EasyClusterError(f"{win.name} is not running: the winner must be a running node ({described})")
    losers = [inv.node(name) for g in groups if g is not winning for name in g]
    return HealSides(win, winning, losers)


# --------------------------------------------------------------------------- restore

def restore(health: ClusterHealth) -> list[str]:
    """restore needs a healthy cluster (every node takes the data). Returns the running hosts,
    among which the backup is looked for (then restore_from)."""
    if not health.healthy:
        raise EasyClusterError("refusing to restore into an unhealthy cluster (every node must take the "
                               "data):\n  " + "\n  ".join(health.problems))
    return [n.host for n in health.nodes if n.running]


def restore_from(path: str, holders: list[str]) -> str:
    """The host the restore runs on: the first running one whose disk holds the backup."""
    if not holders:
        raise EasyClusterError(f"no running node has {path} (`fab backup` prints the path of each backup it takes)")
    return holders[0]


# --------------------------------------------------------------------------- rolling-restart

def rolling_restart(inv: Inventory, health: ClusterHealth) -> Inventory:
    """A rolling restart needs a healthy cluster (a restart could take its last copy of something
    away). Returns the inventory it restarts, in order: every node not taken out on purpose."""
    if not health.healthy:
        raise EasyClusterError("refusing a rolling restart of an unhealthy cluster (a restart could take "
                               "its last copy of something away):\n  " + "\n  ".join(health.problems))
    return replace(inv, nodes=tuple(n for n in inv.nodes if n.name not in health.departed))


# --------------------------------------------------------------------------- start-cluster

def start_cluster(effective: Inventory, facts: dict[str, HostFacts], lost: list[Node]) -> list[Node]:
    """start-cluster --without names lost nodes: none of them may be running. Returns the
    survivors: the nodes of `effective` (the inventory without departed nodes) not lost."""
    for node in lost:
        if facts[node.host].running or facts[node.host].beam_running:
            raise EasyClusterError(f"{node.name} is running: it is not lost (`fab start-cluster` without "
                                   f"--without {node.host})")
    return [n for n in effective.nodes if n not in lost]


def stop_order(facts: dict[str, HostFacts]) -> list[str]:
    """The node names in the order the newest `fab stop-cluster` any host recorded stopped them."""
    newest: dict = {}
    for f in facts.values():
        if f.stop_order and f.stop_order.get("when", "") > newest.get("when", ""):
            newest = f.stop_order
    return list(newest.get("order", []))


def force_load_host(survivors: list[Node], facts: dict[str, HostFacts]) -> Node:
    """start-cluster --without: the one survivor that loads its own copies of the tables (the
    last of them to stop, if known); it must be reachable."""
    order = stop_order(facts)
    candidates = sorted((n for n in survivors if facts[n.host].reachable),
                        key=lambda n: -order.index(n.name) if n.name in order else 1)
    if not candidates:
        raise EasyClusterError("no surviving node is reachable")
    return candidates[0]


# --------------------------------------------------------------------------- upgrade

@dataclass(frozen=True)
class TableChange:
    table: str
    record: str
    running: tuple[str, ...]
    target: tuple[str, ...]
    note: str = ""        # a change the fields do not show (KEY_CHANGES)

    def describe(self) -> str:
        if self.note:
            return f"{self.table} ({self.note})"
        gained = [a for a in self.target if a not in self.running]
        lost = [a for a in self.running if a not in self.target]
        parts = ([f"gains {', '.join(gained)}"] if gained else []) + ([f"loses {', '.join(lost)}"] if lost else [])
        return f"{self.table} ({', '.join(parts) or 'its fields are reordered'})"


# Tables whose record keeps its fields while the shape of what they hold changes at an ejabberd
# version: that version's ejabberd_mnesia transforms them at start (the module's need_transform
# and transform), as it does a changed record. passwd at 25.03 (read in 26.07's
# ejabberd_auth_mnesia): {passwd, {User, Server}, Password} becomes {passwd, {User, Server,
# Type}, Password}, Type being plain or the SCRAM hash.
KEY_CHANGES = {"passwd": ((25, 3), "its key gains the password's type: {User, Server, Type}")}


def compare_records(tables: dict, records: dict, versions: tuple[str, ...] = ()
                    ) -> tuple[list[TableChange], list[str], int]:
    """The tables whose record differs between what Mnesia holds and the target's headers, or
    whose content changes shape between the oldest and the newest of `versions` (the target
    and the running ones, either way: KEY_CHANGES); the tables whose record those headers do
    not define; how many were compared."""
    changed, unknown, compared = [], [], 0
    spanned = [release(v) for v in versions if v and v != "-"]
    low, high = (min(spanned), max(spanned)) if spanned else ((0, 0), (0, 0))
    for table, info in sorted(tables.items()):
        record = str(info.get("record_name", table))
        running = tuple(info.get("attributes", []))
        if record not in records:
            unknown.append(table)
            continue
        compared += 1
        target = tuple(records[record])
        at, what = KEY_CHANGES.get(table, ((0, 0), ""))
        if target != running:
            changed.append(TableChange(table, record, running, target))
        elif what and low < at <= high:
            changed.append(TableChange(table, record, running, target,
                                       f"{what}, at ejabberd {at[0]}.{at[1]:02d}"))
    return changed, unknown, compared


# ejabberd's PostgreSQL schema (new_sql_schema) steps by version (ejabberd's upgrade notes, and
# the sql_schemas/0 of 26.07's modules). easycluster loads pg.new.sql of the installed package
# once and keeps ejabberd's own updater off (update_sql_schema: false): an upgrade across a step
# applies it in a full stop (easycluster.sql has the statements of those it can apply).
SQL_SCHEMA_STEPS = {
    (23, 4): "SERIAL columns to BIGSERIAL, vcard_search's primary key",
    (24, 2): "archive.origin_id and its index",
    (25, 3): "users.\"type\" and the primary key (server_host, username, type)",
    (26, 1): "the invite_token table",
    (26, 3): "rosterusers.approved",
}


def describe_steps(steps: list[tuple[int, int]]) -> str:
    return "; ".join(f"{sql_label(at)}: {SQL_SCHEMA_STEPS[at]}" for at in steps)


def sql_schema_steps(target: str, running: list[str]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The schema steps an upgrade to `target` crosses from the `running` versions: (up, down).
    up: those above the oldest running version, up to the target's; down: those above the
    target, up to the newest running version's (a way back across them)."""
    found = [release(v) for v in running if v and v != "-"]
    if not found or not target:
        return [], []
    to = release(target)
    up = [at for at in SQL_SCHEMA_STEPS if min(found) < at <= to]
    down = [at for at in SQL_SCHEMA_STEPS if to < at <= max(found)]
    return sorted(up), sorted(down)


def schema_problems(inv: Inventory, running: list[str]) -> list[Problem]:
    """With cluster.database: an upgrade across schema steps easycluster has no statements for,
    or a way back below a step the database took (the older version cannot write to it)."""
    if not inv.cluster.database:
        return []
    target = inv.cluster.ejabberd_version
    up, down = sql_schema_steps(target, running)
    problems = []
    unknown = [at for at in up if at not in sql_steps()]
    if unknown:
        problems.append(Problem("cluster", "schema", "with cluster.database, ejabberd " + target + " needs "
                                "schema steps that easycluster does not apply: " + describe_steps(unknown),
                                "upgrade the cluster while its data is in Mnesia, or apply ejabberd's upgrade "
                                "notes' SQL by hand with every node stopped, then pin the new version"))
    if down:
        newest = max(running, key=lambda v: release(v) if v and v != "-" else (0, 0))
        problems.append(Problem("cluster", "schema", f"the database has taken the schema steps of ejabberd "
                                f"{newest} ({describe_steps(down)}): ejabberd {target} cannot write to it",
                                "the way back across a schema step is the pg_dump the upgrade took before it, "
                                "with every node stopped (docs/runbooks/upgrade.md, \"Back from 26.07 with "
                                "cluster.database\")"))
    return problems


def os_moves(inv: Inventory, facts: dict[str, HostFacts]) -> dict[str, tuple[str, str]]:
    """Hosts whose OS the upgrade moves: host -> (its release, the pinned build's), Debian's
    VERSION_IDs. A host with a move under way (its marker) is one, wherever it stands."""
    to = releases.release_of(inv.cluster.ejabberd_version)
    found = {}
    for n in inv.nodes:
        f = facts[n.host]
        if not f.reachable:
            continue
        if f.os_move:     # from where it started (its os-release may say either by now)
            found[n.host] = (releases.version_id(str(f.os_move.get("from") or "")) or f.os_version,
                             to or f.os_version)
        elif to and f.os_version != to:
            found[n.host] = (f.os_version, to)
    return found


def os_move_problems(inv: Inventory, facts: dict[str, HostFacts], moves: dict[str, tuple[str, str]]) -> list[Problem]:
    """A move goes one release up, from a release easycluster knows, with the same ejabberd
    on both sides, between releases whose Mnesia protocols match (the cluster mixes the two
    releases' nodes while it moves)."""
    target = inv.cluster.ejabberd_version
    problems = []
    for host, (now, to) in moves.items():
        f = facts[host]
        if f.os_move:
            continue     # a move under way, checked when it started: resumed, whatever its packages' state
        if not releases.known(f.os_id, now) or to not in releases.DEBIAN:
            problems.append(Problem(host, "os", f"{f.os_release} -> Debian {to}: not a move easycluster knows",
                                    f"easycluster moves {releases.supported()} hosts one release up"))
        elif int(to) < int(now):
            problems.append(Problem(host, "os", f"ejabberd {target} is a build of Debian {to}; the host runs "
                                    f"{f.os_release}: Debian is not downgraded",
                                    "pin a build of the host's release; or rebuild the host on the older "
                                    "release (`fab forget-node`, reinstall, `fab add-master`)"))
        elif int(to) - int(now) > 1:
            problems.append(Problem(host, "os", f"{f.os_release} -> Debian {to}: Debian upgrades one release "
                                    "at a time", "move to the next release first"))
        elif releases.upstream(f.ejabberd_version or "-") != releases.upstream(target):
            was, shipped = releases.upstream(f.ejabberd_version or "-"), releases.shipped(to)
            if was == shipped:
                hint = (f"first the move with Debian {to}'s build of ejabberd {was} pinned (`apt-cache policy "
                        f"ejabberd` on a Debian {to} host), then ejabberd {releases.upstream(target)}")
            else:
                hint = (f"first ejabberd {shipped} on {f.os_release} (its backports: pin the ~bpo{now} build "
                        f"and `fab upgrade`), then the move with Debian {to}'s build of {shipped} pinned")
            problems.append(Problem(host, "os", f"ejabberd {was} -> {releases.upstream(target)} and "
                                    f"{f.os_release} -> Debian {to} at once", "one step at a time: " + hint))
        elif releases.MNESIA_PROTOCOL.get(now) != releases.MNESIA_PROTOCOL.get(to):
            problems.append(Problem(host, "os", f"Mnesia's protocol differs between Debian {now} "
                                    f"({releases.MNESIA_PROTOCOL.get(now)}) and Debian {to} "
                                    f"({releases.MNESIA_PROTOCOL.get(to)}): their nodes cannot share tables",
                                    "a move with the whole cluster stopped: not one easycluster makes"))
    return problems


def _about(problem: str, names: set[str]) -> bool:
    """Is a health problem about these nodes alone (down, or not seen running by a peer)?"""
    if any(problem.startswith(f"{n}: ") for n in names):
        return True
    head, sep, rest = problem.partition(": does not see ")
    return bool(sep) and set(rest.removesuffix(" running").split(", ")) <= names


def records_answer(ufacts: dict):
    """The upgrade's facts of the host asked for the tables' records (upgrade.UpgradeFacts), if any."""
    return next((u for u in ufacts.values() if u.tables is not None or u.records is not None or u.records_error),
                None)


def upgrade(inv: Inventory, facts: dict[str, HostFacts], ufacts: dict, health: ClusterHealth) -> list[Problem]:
    """The upgrade's preflight: nothing to refuse when every node runs the pinned version; else
    a healthy cluster (mixed versions allowed: an upgrade under way), every host's answer (`ufacts`:
    upgrade.UpgradeFacts per host), the pinned version installable where it moves, room for a copy of
    each Mnesia directory, the running tables' records and the target's, and no downgrade across
    a record that differs."""
    target = inv.cluster.ejabberd_version
    current = {n.host: facts[n.host].ejabberd_version or "-" for n in inv.nodes}
    moves = os_moves(inv, facts)
    to_move = [n.host for n in inv.nodes if current[n.host] != target or n.host in moves]
    if not to_move:
        return []
    problems: list[Problem] = []
    moving = {inv.node(h).name for h in moves if facts[h].os_move}   # a move under way: its node is down
    for p in health.problems:
        if not p.startswith((MIXED, MIXED_RELEASES)) and not _about(p, moving):
            problems.append(Problem("cluster", "health", p, "an upgrade starts from a healthy cluster: "
                                    "`fab status` says what to fix first"))
    problems += os_move_problems(inv, facts, moves)
    problems += schema_problems(inv, [current[h] for h in to_move])
    for node in inv.nodes:
        uf = ufacts.get(node.host)
        if uf is None or uf.error:
            problems.append(Problem(node.host, "facts", (uf.error if uf else "no answer"), "check the host"))
            continue
        if node.host in to_move and not uf.installable and not facts[node.host].os_move:   # a cut-off move: fixed by its resumption
            problems.append(Problem(node.host, "package", f"ejabberd {target} cannot be installed: "
                                    f"{uf.install_error or 'apt-get refused'}",
                                    "make the version available to apt (for a ~bpo version: the release's "
                                    "backports suite in its sources)"))
        need = int(uf.mnesia_bytes * COPY_MARGIN)
        if uf.free_bytes and uf.free_bytes < need:
            problems.append(Problem(node.host, "disk", f"{uf.free_bytes // 2**20} MiB free for a copy of "
                                    f"{uf.mnesia_bytes // 2**20} MiB of Mnesia files",
                                    "free space under /var/backups"))
    ask = records_answer(ufacts)
    if ask is None or ask.tables is None:
        problems.append(Problem("cluster", "tables", "the running tables' records could not be read",
                                "is the plugin loaded (`fab deploy`)?"))
    elif ask.records is None:
        problems.append(Problem(ask.host, "records", f"the headers of ejabberd {target} could not be read: "
                                f"{ask.records_error or 'no answer'}", "check that apt can download it"))
    if problems:
        return problems
    older = [h for h in to_move if release(target) < release(current[h])]
    changed, _unknown, _compared = compare_records(ask.tables, ask.records, (target, *(current[h] for h in older)))
    if changed and older:
        problems.append(Problem(", ".join(older), "downgrade", "the record of " +
                                "; ".join(c.describe() for c in changed) + f" differs in ejabberd {target}: "
                                "an older version cannot read tables a newer one transformed",
                                "`fab upgrade --revert` puts back the Mnesia directories copied by the "
                                "full-stop upgrade (with the old version pinned); or `fab restore` a backup "
                                "taken before it, once the old version runs"))
    return problems


# --------------------------------------------------------------------------- the replicated database

@dataclass
class DbRemoval:
    """What remove-database-host goes on with: the member, its entry in the quorum store (None:
    never there), whether it answers (its units are then stopped and its data removed), the
    synchronous standby the primary hands over to when the member is the primary, the members left."""
    host: str
    member: EtcdMember | None
    reachable: bool
    switchover_to: str | None
    survivors: list[str]


def remove_database_host(inv: Inventory, replicas: dict[str, ReplicaFacts], host: str) -> DbRemoval:
    """A member of the replicated database taken out, alive or dead: refused when no quorum
    store answers, when the members left would lack a primary with a synchronous standby or a
    quorum, and when the member is a primary that cannot hand over first."""
    d = inv.cluster.database
    if not d or not d.replicated:
        raise EasyClusterError("cluster.database has no `hosts`: there is no replicated database to take a member "
                               "out of")
    quorum = etcd_members(replicas.values())
    if not quorum:
        raise EasyClusterError("no member's etcd answers: the quorum store is down, nothing can change its members "
                               "(docs/runbooks/database-failover.md: two database hosts gone)")
    member = next((m for m in quorum if host in (m.name, m.hex_id)), None)
    if member is None and host not in d.replicas:
        raise EasyClusterError(f"{host} is not a member of the replicated database (cluster.database.hosts: "
                               f"{', '.join(d.replicas)}; the quorum store's: "
                               f"{', '.join(m.name or m.hex_id for m in quorum)})")
    name = member.name if member and member.name else host
    facts = replicas.get(name)
    reachable = facts is not None and not facts.error
    listed = patroni_list(replicas.values(), skip=name) or (facts.members if reachable else [])
    state = {m.get("Member"): (str(m.get("Role", "")).lower(), str(m.get("State", "")).lower()) for m in listed}
    survivors = [h for h in d.replicas if h != name]
    running = [h for h in survivors if state.get(h, ("", ""))[1] in ("running", "streaming")]
    if len(running) < 2:
        raise EasyClusterError(f"taking {name} out leaves {count(len(running), 'running member')} "
                               f"({', '.join(running) or 'none'}): a primary needs a synchronous standby to acknowledge "
                               "a write. Add a member first (cluster.database.hosts, `fab deploy`), or bring the "
                               "others back")
    left = [m for m in quorum if m is not member]
    alive = [m for m in left if m.name in replicas and replicas[m.name].etcd_active and not replicas[m.name].error]
    if len(alive) * 2 <= len(left):
        raise EasyClusterError(f"etcd answers on {len(alive)} of the {len(left)} members that would be left: "
                               "without a majority the quorum store cannot change its members. Bring etcd back on "
                               f"{', '.join(sorted(m.name or m.hex_id for m in left if m not in alive))} first")
    switchover_to = None
    if state.get(name, ("", ""))[0] == "leader":
        if not reachable:
            raise EasyClusterError(f"{name} is the primary and does not answer: Patroni fails over by itself within "
                                   "about 30 s. Run this again once `fab status` names another primary")
        switchover_to = next((h for h in running if state[h] == ("sync standby", "streaming")), None)
        if switchover_to is None:
            raise EasyClusterError(f"{name} is the primary and no synchronous standby streams from it to hand over "
                                   "to: wait for one (`fab status`), then run this again")
    return DbRemoval(name, member, reachable, switchover_to, survivors)


def force_database_quorum(inv: Inventory, replicas: dict[str, ReplicaFacts], host: str) -> None:
    """The quorum store remade from `host` alone: only when it answers and holds etcd's data,
    no other member answers (one that does restores the majority by starting its etcd, losing
    nothing), and its etcd has no majority (it cannot list its members). Patroni's list is no
    guide here: read from an etcd without its quorum, it may show a primary long gone."""
    d = inv.cluster.database
    if not d or not d.replicated:
        raise EasyClusterError("cluster.database has no `hosts`: there is no replicated database")
    if host not in d.replicas:
        raise EasyClusterError(f"{host} is not in cluster.database.hosts ({', '.join(d.replicas)})")
    f = replicas.get(host)
    if f is None or f.error:
        raise EasyClusterError(f"{host} does not answer ({f.error if f else 'no answer'}): the quorum store can be "
                               "remade only from a member that runs")
    if not f.etcd_data:
        raise EasyClusterError(f"{host} holds no data of the quorum store: remake it from a member that does")
    others = [h for h in d.replicas if h != host and replicas.get(h) and not replicas[h].error
              and replicas[h].etcd_data]   # a host rebuilt afresh holds nothing to give the majority back
    if others:
        raise EasyClusterError(f"{', '.join(others)} {'answers' if len(others) == 1 else 'answer'}: start etcd and "
                               "Patroni there (`fab deploy` does), which gives etcd its majority back and loses "
                               "nothing. This command is for members lost for good")
    if f.etcd_members:   # etcd answered its member list: a linearizable read, so it has its quorum
        raise EasyClusterError(f"etcd on {host} has its majority (it lists its members): nothing to remake")
