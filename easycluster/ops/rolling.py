"""`fab rolling-restart`: every node restarted, one at a time, the cluster serving throughout.

Each node is drained (its users are told and disconnected, to reconnect to another node),
restarted, and must be back in every peer's running_db_nodes with every table loaded before
the next one goes; then it is given a few seconds to finish its start's work (a table loaded
from a peer goes on being rewritten in its dets files), because the next node reloads from the
running ones. The first node that does not come back stops the run: the others are left
untouched.
"""

from __future__ import annotations

from .. import nodectl, refusals
from ..health import ClusterHealth
from ..inventory import Inventory, Node
from ..operation import Operation, operation
from ..progress import Out


def rolling_restart(inv: Inventory, *, out: Out = print, dry: bool = False, lock_wait: float = 0,
                    drain: int = 5) -> ClusterHealth:
    with operation(inv, "rolling-restart", out=out, lock_wait=lock_wait) as op:
        health = op.observe()
        todo = refusals.rolling_restart(op.inv, health)
        if op.dry_run(dry, f"would restart, one at a time (each drained {drain}s, then back with every table "
                           f"before the next): {', '.join(n.host for n in todo.nodes)}"):
            return health
        with op.lock([n.host for n in todo.nodes]):
            for i, node in enumerate(todo.nodes):
                with op.progress.phase(f"restart {node.host}"):
                    health = _cycle(op, node, drain, last=i == len(todo.nodes) - 1)
        return health   # the last node's wait saw the whole cluster healthy


def _cycle(op: Operation, node: Node, drain: int, last: bool) -> ClusterHealth:
    h, progress = op.fleet[node.host], op.progress
    with progress.step(node.host, f"drain ({drain}s) and stop"):
        nodectl.drain_and_stop(h, drain)
    with progress.step(node.host, "start"):
        nodectl.start(h, op.inv.cluster.c2s_port)
    with progress.step(node.host, "back in every peer's running_db_nodes, every table loaded"):
        health = op.wait_back(node)
    if not last:   # the next node reloads its tables from the running ones: not from one still busy
        with progress.step(node.host, "settled (its start's work done)"):
            settled, pct = nodectl.wait_settled(h)
        if not settled:
            progress.say(node.host, f"  still at {pct} % of a core after {nodectl.SETTLE_BOUND} s: going on")
    return health
