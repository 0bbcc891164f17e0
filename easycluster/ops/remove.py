"""`fab remove-node`, `fab forget-node`, `fab backup`: a member taken out of the cluster on
purpose (gracefully while it runs, or offline once it is dead), and a backup on demand.

Every change runs under the cluster lock, after a full Mnesia backup on a surviving master;
the rules that refuse one are refusals.remove_node / forget_node (case tables).
"""

from __future__ import annotations

from dataclasses import replace

from .. import nodectl, probe, refusals
from ..errors import MembershipError
from ..health import ClusterHealth, assess
from ..inventory import Inventory, Node
from ..lock import break_lock as remove_locks
from ..lock import describe_holder
from ..membership import backup, close_database, close_firewall, database_dump, record_departure, wipe
from ..operation import Operation, operation
from ..paths import COOKIE_PATH, MNESIA_DIR
from ..progress import Out, count
from ..refusals import running_masters


def remove_node(inv: Inventory, host: str, *, out: Out = print, dry: bool = False, lock_wait: float = 0,
                drain: int = 5) -> ClusterHealth:
    """Graceful: drain and stop the running node, then take it out of the schema and wipe it."""
    node = inv.node(host)
    with operation(inv, f"remove-node --host {node.host}", out=out, lock_wait=lock_wait) as op:
        facts = op.look(network=False, via=False, phase=None)
        survivors = refusals.remove_node(inv, facts, node)
        master = running_masters(survivors, facts)[0]
        if op.dry_run(dry, f"would back up on {master.host}, drain {node.name} ({drain}s) and stop it, remove it "
                           f"from the schema on {master.name}, close the firewall (and database) to it, and wipe "
                           f"its Mnesia directory; {count(len(survivors), 'member')} left"):
            return assess(replace(inv, nodes=tuple(survivors)), facts)

        def drain_first() -> None:
            with op.progress.step(node.host, f"drain ({drain}s) and stop"):
                nodectl.drain_and_stop(op.fleet[node.host], drain)
        _take_out(op, node, survivors, "removed", before=drain_first)
        wipe(op.fleet, node, op.progress)
        return _verify_survivors(op, survivors)


def forget_node(inv: Inventory, host: str, *, out: Out = print, dry: bool = False,
                lock_wait: float = 0) -> ClusterHealth:
    """Offline: take a dead (stopped or unreachable) node out of the schema from a survivor."""
    node = inv.node(host)
    with operation(inv, f"forget-node --host {node.host}", out=out, lock_wait=lock_wait) as op:
        facts = op.look(network=False, via=False, phase=None)
        f = facts[node.host]
        survivors = refusals.forget_node(inv, facts, node)
        master = running_masters(survivors, facts)[0]
        if op.dry_run(dry, f"would back up on {master.host}, remove {node.name} from the schema on {master.name}, "
                           "close the firewall (and database) to it" +
                           ("" if f.error else ", and wipe its Mnesia directory") +
                           f"; {count(len(survivors), 'member')} left"):
            return assess(replace(inv, nodes=tuple(survivors)), facts)
        _take_out(op, node, survivors, "forgotten")
        if not f.error:
            wipe(op.fleet, node, op.progress)
        else:
            op.progress.say(node.host, "unreachable: its disk still holds the old Mnesia files. Before ejabberd "
                                       f"starts there again, empty {MNESIA_DIR} (keep "
                                       f"{COOKIE_PATH.rsplit('/', 1)[-1]}), or bring it back only with "
                                       f"`fab add-master --host {node.host}`, which does that first")
        return _verify_survivors(op, survivors)


def _take_out(op: Operation, node: Node, survivors: list[Node], how: str, before=None) -> None:
    """Under the lock, after a backup on a surviving master: `before`, then remove the node
    from the schema there, and record on every reachable host that it left on purpose."""
    inv, fleet, facts, progress = op.declared, op.fleet, op.facts, op.progress
    master = running_masters(survivors, facts)[0]
    hosts = [n.host for n in survivors] + ([] if facts[node.host].error else [node.host])
    with op.lock(hosts):
        backup(inv, fleet, master.host, progress.say)
        if before:
            before()
        with progress.step(master.host, f"remove {node.name} from the schema"):
            answer = nodectl.forget(fleet[master.host], node.name)
        progress.say(master.host, f"  db_nodes now: {', '.join(answer.get('db_nodes', []))}")
        record_departure(fleet, hosts, node, how)
        close_firewall(inv, fleet, survivors, facts, node, progress)
        close_database(inv, fleet, facts, node, progress)
        op.update_monitoring(replace(inv, nodes=tuple(survivors)))   # nothing left alerting on it


def _verify_survivors(op: Operation, survivors: list[Node]) -> ClusterHealth:
    sub = replace(op.declared, nodes=tuple(survivors))
    health = assess(sub, probe.gather(op.fleet, [n.host for n in survivors], probe_network=False))
    masters = sum(1 for n in health.nodes if n.master and not n.satellite)
    op.progress.say("cluster", f"{count(len(survivors), 'member')}, {count(masters, 'master')} "
                               f"({'healthy' if health.healthy else 'NOT healthy'})")
    if not health.healthy:
        raise MembershipError("the remaining cluster is not healthy:\n  " + "\n  ".join(health.problems))
    return health


def backup_now(inv: Inventory, host: str | None = None, *, out: Out = print) -> str:
    """`fab backup`: a full Mnesia backup on a running master (`host`, or the first one), and with
    cluster.database a pg_dump; returns the backup's path."""
    with operation(inv, "backup", out=out) as op:
        facts = op.look(network=False, via=False, phase=None)
        masters = running_masters(list(inv.nodes), facts)
        if host is not None:
            node = inv.node(host)
            if node not in masters:
                raise MembershipError(f"{node.host} is not a running master: back up on one of "
                                      f"{', '.join(n.host for n in masters) or '(none running)'}")
            masters = [node]
        if not masters:
            raise MembershipError("no running master to take a backup on")
        path = backup(inv, op.fleet, masters[0].host, op.progress.say)
        if inv.cluster.database:
            database_dump(inv, op.fleet, op.progress.say, masters[0].host)
        return path


def break_lock(inv: Inventory, *, out: Out = print) -> list[tuple[str, dict]]:
    """`fab break-lock`: remove the cluster lock a run that died left (unreachable hosts skipped),
    saying whose it was."""
    with operation(inv, "break-lock", out=out) as op:
        removed = remove_locks(op.fleet, list(op.fleet.hosts))
    if not removed:
        out("no lock held")
    for host, holder in removed:
        out(f"[{host}] removed: {describe_holder(holder)}")
    return removed
