"""`fab rolling-restart`: every node restarted, one at a time, the cluster serving throughout.

Each node is drained (its users are told and disconnected, to reconnect to another node),
restarted, and must be back in every peer's running_db_nodes with every table loaded before
the next one goes. The first node that does not come back stops the run: the others are
left untouched.
"""

from __future__ import annotations

from . import nodectl
from .health import ClusterHealth
from .inventory import Inventory, Node
from .lock import ClusterLock
from .progress import Progress
from . import refusals
from .remote import Fleet
from .status import observe, wait_for

BACK_BOUND = 180   # seconds for a restarted node to be back with all tables


def rolling_restart(inv: Inventory, progress: Progress, drain: int = 5, lock_wait: float = 0) -> ClusterHealth:
    with Fleet(inv) as fleet:
        health = observe(inv, fleet)
        effective = refusals.rolling_restart(inv, health)
        with ClusterLock(fleet, [n.host for n in effective.nodes], "rolling-restart", lock_wait):
            for node in effective.nodes:
                with progress.phase(f"restart {node.host}"):
                    health = _cycle(effective, fleet, node, drain, progress)
        return health   # the last node's wait saw the whole cluster healthy


def _cycle(inv: Inventory, fleet: Fleet, node: Node, drain: int, progress: Progress) -> ClusterHealth:
    h = fleet[node.host]
    with progress.step(node.host, f"drain ({drain}s) and stop"):
        nodectl.drain_and_stop(h, drain)
    with progress.step(node.host, "start"):
        nodectl.start(h, inv.cluster.c2s_port)
    with progress.step(node.host, "back in every peer's running_db_nodes, every table loaded"):
        health = wait_back(inv, fleet, node)
    return health


def wait_back(inv: Inventory, fleet: Fleet, node: Node, bound: float = BACK_BOUND) -> ClusterHealth:
    """Until every node runs, sees every other running, and is a master again."""
    return wait_for(inv, fleet, lambda h: h.healthy, bound, f"{node.name} back in the cluster", interval=0.5)
