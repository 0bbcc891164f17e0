"""The steps that change who is in the cluster, shared by the commands (the operation layer):
joins (with rollback), backups before a membership change, the record of departed nodes,
wiping a node taken out, and closing the firewall and the database to it.

A join that fails in any way is rolled back: the node is taken out of the schema, stopped and
wiped, so the cluster is as it was and the same command can run again. A join whose toolkit
died leaves a marker on the node; the next run finds it. The commands (deploy, add-master,
remove-node, forget-node...) run these under the cluster lock, after a full Mnesia backup.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timezone

from . import nodectl, replicated
from .errors import EasyClusterError, JoinFailed, MembershipError, RemoteError
from .facts import HostFacts
from .health import departed, disc_tables
from .inventory import Inventory, Node
from .paths import PG_DUMP_DIR, STAGING_TEMPLATE
from .database import provision
from .plan import DB_HBA, dist_address, members_of
from .render import firewall_files, host_files
from .progress import Progress
from .remote import Background, Fleet, Host
from .scripts import render


# --------------------------------------------------------------------------- joins

def join(inv: Inventory, fleet: Fleet, node: Node, seed: str, say) -> dict:
    """Join a node that runs standalone (no users: the plan refuses others) to running member
    `seed` as a master, the one way a node joins: stopped through its unit, its standalone
    Mnesia files moved to a tarball, started again to join at boot, verified once it runs.
    On any failure roll back and raise MembershipError saying what happened and what state
    things are in."""
    h = fleet[node.host]
    tarball = nodectl.stop_and_wipe(h)
    if tarball:
        say(node.host, f"  stopped; its standalone Mnesia files are kept in {tarball}")
    nodectl.launch_joining(h, seed)
    answer = join_at_boot(inv, fleet, node, seed, say)
    try:
        nodectl.wait_started(h, inv.cluster.c2s_port)
    except RemoteError as exc:
        note = roll_back_join(inv, fleet, node, seed, reachable=True)
        raise MembershipError(f"[{node.host}] {node.name} did not start after its join: {exc.detail}\n"
                              f"  rolled back: {note}") from None
    check_joined(inv, fleet, node, seed)
    return answer


def join_at_boot(inv: Inventory, fleet: Fleet, node: Node, seed: str, say) -> dict:
    """Give a node launched with nodectl.launch_joining its turn: it joins `seed` as a master
    before its ejabberd starts. Verified later, once it runs (check_joined); rolled back on failure."""
    return _joining(inv, fleet, node, seed, say, lambda progress: nodectl.boot_join(fleet[node.host], progress))


def _joining(inv: Inventory, fleet: Fleet, node: Node, seed: str, say, run) -> dict:
    """Run a join (`run(progress)`), reporting per-table progress and the plugin's step timings;
    on failure roll back whatever it changed and raise MembershipError saying so."""
    def table_progress(line: str) -> None:
        shown = progress_line(line)
        if shown:
            say(node.host, shown)

    try:
        answer = run(table_progress)
    except JoinFailed as failed:
        if failed.changed_nothing:
            nodectl.clear_joining(fleet[node.host], member=False)
            raise MembershipError(f"[{node.host}] join of {node.name} to {seed} refused: {failed.detail} "
                                  "(nothing was changed)") from None
        note = roll_back_join(inv, fleet, node, seed, reachable=not failed.lost)
        raise MembershipError(f"[{node.host}] join of {node.name} to {seed} failed: {failed.detail}\n"
                              f"  rolled back: {note}") from None
    steps = answer.get("steps", [])
    if steps:
        say(node.host, "  " + ", ".join(f"{s.get('step')} {s.get('ms', 0)}ms" for s in steps))
    return answer


def progress_line(line: str) -> str | None:
    """What an operator sees of a line of the plugin's join progress (None: nothing): tables
    being copied (a line a second while one copies), tables copied that took a second or held
    a thousand records, a paused join."""
    parts = line.split()
    if parts[:1] == ["copying"] and len(parts) == 8 and parts[3].isdigit() and parts[4].isdigit() \
            and parts[6].isdigit():
        done, total, unit, secs, stage = int(parts[3]), int(parts[4]), parts[5], int(parts[6]) / 1000, parts[7]
        head = f"  copying {parts[1]} ({parts[2]}), {secs:.0f}s: "
        if stage == "indexing":
            return head + "received, building its index"
        if stage == "closing":
            return head + "received, closing its file"
        share = f" ({min(99, 100 * done // total)}%)" if total else ""
        if unit == "received":
            return head + f"{done / 1e6:.1f} MB received of {total / 1e6:.1f} MB{share}"
        if unit == "written":     # dets writes each byte several times: no share of a total
            return head + f"{done / 1e6:.1f} MB written"
        return head + f"{done} of {total} records{share}"
    if parts[:1] == ["table"] and len(parts) == 5 and parts[3].isdigit() and parts[4].isdigit() \
            and (int(parts[4]) >= 1000 or int(parts[3]) >= 1000):
        return f"  copied {parts[1]} ({parts[2]}, {parts[3]} records) in {int(parts[4]) / 1000:.1f}s"
    if parts[:1] == ["paused"]:
        return "  join paused before copying tables (fault injection file present)"
    return None


def check_joined(inv: Inventory, fleet: Fleet, node: Node, seed: str, statuses: dict | None = None) -> None:
    """Verify a join (from `statuses` if the caller has just read every node's); roll it back
    and raise if it does not hold, else take its marker away."""
    problem = verify_joined(inv, fleet, node, seed, statuses)
    if problem:
        note = roll_back_join(inv, fleet, node, seed, reachable=True)
        raise MembershipError(f"[{node.host}] join of {node.name} could not be verified: {problem}\n"
                              f"  rolled back: {note}")
    nodectl.clear_joining(fleet[node.host], member=True)


def verify_joined(inv: Inventory, fleet: Fleet, node: Node, seed: str, statuses: dict | None = None) -> str | None:
    """None if every running member sees the node running and it holds every table."""
    if statuses is None:
        statuses = fleet.parallel(nodectl.status, [n.host for n in inv.nodes])
    for host, st in statuses.items():
        if isinstance(st, dict) and seed in st.get("db_nodes", []) and node.name not in st.get("running_db_nodes", []):
            return f"{host} does not see {node.name} running"
    mine = statuses[node.host]
    if not isinstance(mine, dict):
        return f"{node.name} does not answer"
    if not mine.get("master"):
        return f"{node.name} is not a master: no local copy of {', '.join(mine.get('missing_tables', [])) or '?'}"
    return None


def check_satellite(h, node: Node) -> None:
    """A satellite must hold no disc copy of any table, and its schema in RAM."""
    st = nodectl.status(h)
    if not isinstance(st, dict):
        raise MembershipError(f"[{node.host}] {node.name} does not answer")
    disc = disc_tables(st, node.name)
    if st.get("schema") != "ram_copies" or disc:
        raise MembershipError(f"[{node.host}] {node.name} is not a satellite: schema {st.get('schema')}, "
                              f"disc copies of {', '.join(disc) or 'nothing'}")


def roll_back_join(inv: Inventory, fleet: Fleet, node: Node, seed: str, reachable: bool) -> str:
    """Take a half-joined node out: stop it, remove it from the schema (from the seed),
    wipe its Mnesia directory. With the node cut off, only the schema part can be done
    now; its marker makes the next run finish the job."""
    done = []
    h = fleet[node.host]
    if reachable:
        try:
            nodectl.stop_and_wipe(h)
            done.append(f"{node.name} stopped and its Mnesia directory emptied")
        except RemoteError as exc:
            reachable = False
            done.append(f"could not stop {node.host} ({exc.detail})")
    seed_host = fleet[inv.node(seed).host]
    try:
        answer = nodectl.forget(seed_host, node.name)
        done.append(f"{node.name} removed from the schema on {seed}" if answer.get("result") == "forgotten"
                    else f"{node.name} was not in the schema")
    except RemoteError as exc:
        done.append(f"could NOT remove {node.name} from the schema: {exc.detail} "
                    f"(run `fab forget-node --host {node.host}` once it is stopped)")
    if not reachable:
        done.append(f"{node.host} is cut off: the next add-master/deploy stops and wipes it before anything else")
    return "; ".join(done)


def recover_interrupted_join(inv: Inventory, fleet: Fleet, node: Node, f: HostFacts, seed: str, say) -> bool:
    """A join marker on the node: an earlier run died or lost the node mid-join. Keep the
    join if it completed (verified now: True), otherwise roll it back (False)."""
    h = fleet[node.host]
    if f.running and verify_joined(inv, fleet, node, seed) is None:
        nodectl.clear_joining(h, member=True)
        say(node.host, f"an earlier join of {node.name} was left unverified; verified now: it is a master")
        return True
    note = roll_back_join(inv, fleet, node, seed, reachable=True)
    say(node.host, f"an earlier join of {node.name} was interrupted; rolled back: {note}")
    return False


# --------------------------------------------------------------------------- backups

def backup(inv: Inventory, fleet: Fleet, host: str, say, spare: str | None = None) -> str:
    return backup_begun(inv, fleet, host, say, spare).finish()


class BackupUnderWay:
    """A backup being written on a node (backup_begun): what it holds is fixed already."""

    def __init__(self, inv: Inventory, fleet: Fleet, host: str, say, spare: str | None):
        self.host, self._say, self._keep = host, say, inv.cluster.backups_keep
        self._active = threading.Event()
        label = f"{inv.cluster.name}-{inv.node(host).name}"
        self._writer = Background(lambda: self._written(nodectl.backup(fleet[host], label, self._keep, spare,
                                                                        on_active=self._active.set)))

    def _written(self, result: tuple[str, int]) -> tuple[str, int]:
        self._active.set()
        return result

    def wait_active(self) -> None:
        """Until the backup's checkpoint is active; a backup that failed before raises here."""
        while not self._active.wait(0.05):
            if self._writer.done():
                self._writer.result()   # its error
                break

    def finish(self) -> str:
        """Wait for the file; say where it is; return its path (raise if it failed)."""
        path, size = self._writer.result()
        self._say(self.host, f"Mnesia backup: {path} ({size / 1e6:.1f} MB; newest {self._keep} kept)")
        return path


def backup_begun(inv: Inventory, fleet: Fleet, host: str, say, spare: str | None = None) -> BackupUnderWay:
    """A full backup taken on `host`, returned as soon as its checkpoint is active: it holds the
    cluster as it is now, and a membership change may start at once while the file is written
    (a join beside the backup of a big cluster: Mnesia gives the new node a retainer of the
    checkpoint for each table it gets a copy of). finish() waits for it. A backup that failed
    before its checkpoint was active raises here, before anything changes."""
    underway = BackupUnderWay(inv, fleet, host, say, spare)
    underway.wait_active()
    return underway


def database_dump(inv: Inventory, fleet: Fleet, say, node_host: str | None = None, avoid: str | None = None) -> str:
    """A pg_dump of cluster.database: on the database host easycluster provisions, or, for an
    external server, on a node (`node_host`) with PostgreSQL's client, as the cluster's role
    (a replicated database's: on a standby, not on `avoid`, a member about to leave)."""
    from .database import pgpass_line
    from .secrets import load_password
    d = inv.cluster.database
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = f"{PG_DUMP_DIR}/{inv.cluster.name}-{d.name}.{stamp}.dump"
    pgpass = "-"
    if d.managed:
        h = fleet.database_host()
    elif d.replicated:   # from a standby streaming from the primary (the primary when none is)
        h = replicated.dump_source(fleet, avoid)
    else:
        h = fleet[node_host or next(iter(fleet.hosts))]
        pgpass = f"{STAGING_TEMPLATE.removesuffix('XXXXXX')}pgpass.{stamp}"
        h.put_bytes(pgpass_line(d, load_password(inv.cluster)).encode(), pgpass)
    r = h.script(render("db_dump", db_name=d.name, dump=path, keep=inv.cluster.backups_keep, pgpass=pgpass,
                        server=d.server, port=d.port, db_user=d.user), what="taking a pg_dump", timeout=3600)
    size = int(r.stdout.strip().splitlines()[-1])
    say(h.name, f"pg_dump of {d.name}: {path} ({size / 1e6:.1f} MB; newest {inv.cluster.backups_keep} kept)")
    return path


def _close_replicas(inv: Inventory, fleet: Fleet, facts, gone: Node, progress: Progress) -> None:
    """A replicated database's members no longer let the departed node in: each member's Patroni
    file (its pg_hba) and firewall rewritten for the nodes still in (plan.plan_replicas)."""
    from .plan import DB_FIREWALL, DB_PATRONI, DbView, plan_replicas
    from .secrets import load_password, load_replication_password
    away = departed(facts)
    view = DbView(None, {}, load_password(inv.cluster), let_in=tuple(n for n in inv.nodes if n is not gone
                                                                      and n.name not in away),
                  replicas=replicated.probe_all(fleet), replication=load_replication_password(inv.cluster))
    steps, problems = plan_replicas(inv, facts, view)
    if problems:
        progress.say("database", f"  could not close the database to {gone.name}: "
                                 f"{'; '.join(p.detail for p in problems)} (`fab deploy` does it later)")
        return
    steps = [s for s in steps if s.action in (DB_PATRONI, DB_FIREWALL)]
    try:
        with progress.step("database", f"pg_hba and firewall of {', '.join(inv.cluster.database.replicas)}: "
                                       f"{gone.name} no longer let in"):
            replicated.provision(fleet, inv, steps, view.password, progress.say)
    except (EasyClusterError, RemoteError) as exc:   # the node is out of the cluster already
        progress.say("database", f"  could not close the database to {gone.name}: {exc} (`fab deploy` does it "
                                 "later)")


# --------------------------------------------------------------------------- departed nodes

def record_departure(fleet: Fleet, hosts: list[str], node: Node, how: str) -> None:
    """Note on each host that `node` left deliberately (removed or forgotten), so status and
    deploy do not treat it as a failure or join it back behind the operator's back."""
    entry = {"how": how, "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    _edit_departed(fleet, hosts, node.name, entry)


def clear_departure(fleet: Fleet, hosts: list[str], node: Node) -> None:
    _edit_departed(fleet, hosts, node.name, None)


def _edit_departed(fleet: Fleet, hosts: list[str], name: str, entry: dict | None) -> None:
    script = render("departed", node=name, how=entry["how"] if entry else "", when=entry["when"] if entry else "")
    fleet.parallel(lambda h: h.script(script, check=False, timeout=15), hosts)


# --------------------------------------------------------------------------- remove / forget

def wipe(fleet: Fleet, node: Node, progress: Progress, what: str = "wipe its Mnesia directory (cookie kept)") -> None:
    """Stop the node and empty its Mnesia directory, saying where the old files went."""
    with progress.step(node.host, what):
        tarball = nodectl.stop_and_wipe(fleet[node.host])
    if tarball:
        progress.say(node.host, f"  its old Mnesia files are kept in {tarball}")


def firewall_members(inv: Inventory, facts, joining: Node | None = None, leaving: Node | None = None) -> list[str]:
    """Who the firewall lets reach epmd and the distribution: every node of the inventory not
    taken out on purpose, with `joining` in and `leaving` out, whatever their records say."""
    away = departed(facts)
    return members_of(replace(inv, nodes=tuple(n for n in inv.nodes if n is joining or (
        n is not leaving and n.name not in away))), facts)


def close_firewall(inv: Inventory, fleet: Fleet, survivors: list[Node], facts, gone: Node, progress: Progress) -> None:
    """The survivors' firewall no longer lets the departed node reach epmd or the distribution."""
    members = firewall_members(inv, facts, leaving=gone)

    def close(h: Host) -> None:
        with progress.step(h.name, f"firewall: {gone.name} no longer let in"):
            nodectl.configure(h, firewall_files(inv, inv.node(h.name), members), plugin=False)
    fleet.each([n.host for n in survivors], close)


def close_database(inv: Inventory, fleet: Fleet, facts, gone: Node, progress: Progress) -> None:
    """The database host easycluster provisions no longer lets the departed node log in: its
    pg_hba.conf lines are those of the nodes still in (an external server's are its operators')."""
    d = inv.cluster.database
    if d and d.replicated:
        _close_replicas(inv, fleet, facts, gone, progress)
        return
    if not d or not d.managed:
        return
    away = departed(facts)
    nodes = [(n, a) for n in inv.nodes if n is not gone and n.name not in away
             for a in [dist_address(n, facts)] if a]
    _conf, hba = host_files(inv, nodes, "")
    h = fleet.database_host()
    with progress.step(h.name, f"pg_hba.conf: {gone.name} no longer let in"):
        provision(h, inv, {DB_HBA}, None, hba=hba)
