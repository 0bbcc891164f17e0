"""`fab heal --winner NODE`: end a partition by keeping one side's data.

After a network partition both sides of a Mnesia cluster go on accepting writes and never
merge again by themselves (ejabberd #2593). The operator names the winner; every running
node outside the winner's side is backed up (its writes can be looked at later), told to
load its tables from the winner's side (master nodes), restarted one at a time, and then
the master setting is cleared so that it does not outlive the heal. The losers' clients are
drained first, all at once: they log in again on the winner's side, where the messages sent to
them since the cut wait (the heal's restarts and backups are not part of their time offline).
The offline messages a loser stored during the partition (for users on the other side: nobody
else has them) are carried over: saved after the drain, stored again after its restart.
"""

from __future__ import annotations

from .. import nodectl, refusals
from ..health import ClusterHealth
from ..inventory import Inventory
from ..membership import backup
from ..operation import Operation, operation
from ..progress import Out
from ..remote import Host


DRAIN = 5   # seconds a loser's clients get to move before it restarts


def heal(inv: Inventory, winner: str | None, *, out: Out = print, dry: bool = False,
         lock_wait: float = 0) -> ClusterHealth:
    with operation(inv, "heal", out=out, lock_wait=lock_wait) as op:
        fleet, progress = op.fleet, op.progress
        health = op.observe()
        decided = refusals.heal(inv, health, winner)
        if decided is None:
            progress.say("cluster", f"not partitioned ({'healthy' if health.healthy else 'NOT healthy'}): "
                                    "nothing to heal")
            if not op.dry_run(dry, *[f"would clear the master setting of {n.name}" for n in health.nodes
                                     if n.running and n.master_nodes]):
                _clear_masters(op, health)
            return health
        win, winning, losers = decided.winner, decided.winning, decided.losers
        if op.dry_run(dry, f"would keep the data of {win.name}'s side ({', '.join(winning)}); back up, load "
                           f"from that side and restart, one at a time: {', '.join(n.name for n in losers)}"):
            return health
        by_name = {n.name: n for n in health.nodes}
        with op.lock([n.host for n in inv.nodes if by_name.get(n.name) and by_name[n.name].running],
                     f"heal --winner {win.host}"):
            # Every loser's clients go first, all at once: they reconnect to the winner's side,
            # where the messages waiting for them since the cut are (a user on a loser counts as
            # offline there until it logs in again), and write nothing more on the losing side.
            def drain(h: Host) -> None:
                with progress.step(h.name, f"drain ({DRAIN}s)"):
                    nodectl.drain(h, DRAIN)
            fleet.each([n.host for n in losers], drain)
            for node in losers:
                h = fleet[node.host]
                backup(inv, fleet, node.host, lambda host, msg: progress.say(host, msg + " (its side's data)"))
                with progress.step(node.host, f"load tables from {', '.join(winning)} at next start"):
                    nodectl.set_master(h, winning)
                # Its writes are discarded, but not the messages it stored for users it could not
                # reach (drained above: nothing more is written here): saved, stored again below.
                carried = nodectl.offline_export(h)
                progress.say(node.host, f"{carried} offline messages stored on its side during the partition saved")
                with progress.step(node.host, "restart"):
                    nodectl.restart(h, inv.cluster.c2s_port)
                with progress.step(node.host, "master setting cleared"):
                    nodectl.set_master(h, [])
                imported = nodectl.offline_import(h)
                progress.say(node.host, f"{imported} of them stored again, with the winner's data")
            # every node forgets the partition (a restart can itself be reported as one)
            def clear_partition(h: Host) -> None:
                with progress.step(h.name, "partition record cleared"):
                    nodectl.partition_clear(h)
            fleet.each([inv.node(name).host for name in winning] + [n.host for n in losers], clear_partition)
            # healthy includes: no master setting left anywhere
            with progress.step(win.host, "every node back in one cluster, every table loaded"):
                health = op.wait_back(win)
        return health


def _clear_masters(op: Operation, health: ClusterHealth) -> None:
    """A master setting left anywhere (by a heal that died, or by hand) would make that node
    ignore its peers at its next start: clear it."""
    for n in health.nodes:
        if n.running and n.master_nodes:
            with op.progress.step(n.host, f"clear master nodes ({', '.join(n.master_nodes)})"):
                nodectl.set_master(op.fleet[n.host], [])
