"""`fab remove-database-host`: a member of the replicated database (cluster.database.hosts)
taken out on purpose, alive or dead. Adding one is `fab deploy` with the host listed (the plan's
DB_JOIN step); replacing one is both (docs/runbooks/database-members.md).

Under the cluster lock, after a pg_dump on another member: the primary hands over first when it
is the one leaving (a planned switchover to its synchronous standby); a member that answers is
stopped and emptied; the quorum store forgets it; then the members left are waited for (a
primary with a synchronous standby). Its rules are refusals.remove_database_host (case tables).
"""

from __future__ import annotations

from .. import refusals, replicated
from ..membership import database_dump
from ..operation import operation
from ..progress import Out, count


def remove_database_host(inv, host: str, *, out: Out = print, dry: bool = False, lock_wait: float = 0) -> list[dict]:
    """Take `host` (an inventory database host, or a quorum store member's name or id) out of
    the replicated database; returns Patroni's list of the members left."""
    with operation(inv, f"remove-database-host --host {host}", out=out, lock_wait=lock_wait) as op:
        with op.progress.phase("facts"):
            replicas = replicated.probe_all(op.fleet)
        gone = refusals.remove_database_host(inv, replicas, host)
        would = (([f"{gone.host} hands the primary over to {gone.switchover_to}"] if gone.switchover_to else []) +
                 ([f"stop Patroni and etcd on {gone.host} and remove their data"] if gone.reachable else
                  [f"{gone.host} does not answer: its disk is left as it is"]) +
                 ([f"etcd forgets member {gone.member.hex_id}"] if gone.member else []))
        if op.dry_run(dry, f"would take a pg_dump on a member that stays, then: {'; '.join(would)}; "
                           f"{count(len(gone.survivors), 'member')} left ({', '.join(gone.survivors)})"):
            return []
        with op.lock():
            database_dump(inv, op.fleet, op.progress.say, avoid=gone.host)
            if gone.switchover_to:
                with op.progress.step("database", f"switchover: {gone.host} hands the primary over to "
                                                  f"{gone.switchover_to} (its synchronous standby)"):
                    replicated.switchover(op.fleet, gone.host, gone.switchover_to)
            if gone.reachable:
                with op.progress.step(gone.host, "stop Patroni and etcd, remove their data"):
                    replicated.retire(op.fleet, gone.host)
            if gone.member:
                with op.progress.step("database", f"etcd forgets {gone.host} ({gone.member.hex_id})"):
                    left = replicated.forget(op.fleet, gone.member.hex_id, gone.survivors)
                op.progress.say("database", f"  quorum store: {left}")
            with op.progress.step("database", f"{count(len(gone.survivors), 'member')} left: a primary with a "
                                              "synchronous standby"):
                state = replicated.wait_ready(op.fleet, gone.survivors)
        op.out(f"{gone.host} is out of the replicated database. Now take it out of cluster.database.hosts "
               "(with its replacement, if any) and run `fab deploy`: the members' pg_hba, firewall and etcd "
               "settings, and the nodes' HAProxy, drop it")
        return state


def force_database_quorum(inv, host: str, *, confirm, out: Out = print, dry: bool = False,
                          lock_wait: float = 0) -> list[dict]:
    """docs/runbooks/database-failover.md, "Two database hosts gone": the quorum store remade
    from `host` alone (its data kept), then the wait for Patroni to make it primary. The lost
    members are then replaced in the inventory, and `fab deploy` adds them."""
    with operation(inv, f"force-database-quorum --host {host}", out=out, lock_wait=lock_wait) as op:
        with op.progress.phase("facts"):
            replicas = replicated.probe_all(op.fleet)
        refusals.force_database_quorum(inv, replicas, host)
        lost = [h for h in inv.cluster.database.replicas if h != host]
        question = (f"remake the quorum store (etcd) from {host} alone, dropping {', '.join(lost)} from it for good "
                    f"(they rejoin only afresh, by `fab deploy`)")
        if op.dry_run(dry, f"would {question}"):
            return []
        if not confirm(question + "?"):
            out("nothing was changed")
            return []
        with op.lock():
            with op.progress.step(host, "etcd: a new cluster of one, from its own data"):
                left = replicated.force_quorum(op.fleet, host)
            op.progress.say(host, f"  quorum store: {left}")
            with op.progress.step(host, "Patroni makes it primary"):
                state = replicated.wait_primary(op.fleet, host, why=(
                    "of the quorum store's remaking. If it was an asynchronous standby it may lack acknowledged "
                    "writes, and Patroni will not promote it: see docs/runbooks/database-failover.md (\"Two "
                    "database hosts gone\") before forcing it"))
        out(f"{host} is the primary, alone: no write can be acknowledged by a synchronous standby until one "
            f"joins. Now put new hosts in place of {', '.join(lost)} in cluster.database.hosts and run `fab deploy`")
        return state
