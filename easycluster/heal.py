"""`fab heal --winner NODE`: end a partition by keeping one side's data.

After a network partition both sides of a Mnesia cluster go on accepting writes and never
merge again by themselves (ejabberd #2593). The operator names the winner; every running
node outside the winner's side is backed up (its writes can be looked at later), told to
load its tables from the winner's side (master nodes), restarted one at a time, and then
the master setting is cleared so that it does not outlive the heal. The offline messages a
loser stored during the partition (for users on the other side: nobody else has them) are
carried over: its clients are drained (so that nothing more is written there), the messages
saved, and stored again after its restart.
"""

from __future__ import annotations

from . import nodectl
from .health import ClusterHealth
from .inventory import Inventory
from .lock import ClusterLock
from .membership import backup
from .progress import Progress
from . import refusals
from .remote import Fleet, Host
from .rolling import wait_back
from .status import observe


DRAIN = 5   # seconds a loser's clients get to move before it restarts


def heal(inv: Inventory, winner: str | None, progress: Progress, lock_wait: float = 0) -> ClusterHealth:
    with Fleet(inv) as fleet:
        health = observe(inv, fleet)
        decided = refusals.heal(inv, health, winner)
        if decided is None:
            progress.say("cluster", f"not partitioned ({'healthy' if health.healthy else 'NOT healthy'}): "
                                    "nothing to heal")
            _clear_masters(inv, fleet, health, progress)
            return health
        win, winning, losers = decided.winner, decided.winning, decided.losers
        by_name = {n.name: n for n in health.nodes}
        with ClusterLock(fleet, [n.host for n in inv.nodes if by_name.get(n.name) and by_name[n.name].running],
                         f"heal --winner {win.host}", lock_wait):
            for node in losers:
                h = fleet[node.host]
                backup(inv, fleet, node.host, lambda host, msg: progress.say(host, msg + " (its side's data)"))
                with progress.step(node.host, f"load tables from {', '.join(winning)} at next start"):
                    nodectl.set_master(h, winning)
                # Its writes are discarded, but not the messages it stored for users it could not
                # reach: its clients go first (they reconnect elsewhere, and write nothing more
                # here), then those messages are saved.
                with progress.step(node.host, f"drain ({DRAIN}s)"):
                    nodectl.drain(h, DRAIN)
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
                health = wait_back(inv, fleet, win)
        return health


def _clear_masters(inv: Inventory, fleet: Fleet, health: ClusterHealth, progress: Progress) -> None:
    """A master setting left anywhere (by a heal that died, or by hand) would make that node
    ignore its peers at its next start: clear it."""
    for n in health.nodes:
        if n.running and n.master_nodes:
            with progress.step(n.host, f"clear master nodes ({', '.join(n.master_nodes)})"):
                nodectl.set_master(fleet[n.host], [])
