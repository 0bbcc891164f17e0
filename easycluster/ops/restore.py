"""`fab restore --backup PATH`: the whole cluster back to a backup taken by `fab backup`.

The restore runs inside the cluster on the host holding the backup: every disc table is
cleared and refilled from it on all its replicas at once, so every node ends with the same
data; sessions and routes (ram tables) are left alone. A backup of the present state is
taken first, so a restore can itself be undone.
"""

from __future__ import annotations

from .. import nodectl, refusals
from ..errors import EasyClusterError
from ..health import ClusterHealth
from ..inventory import Inventory
from ..membership import backup
from ..operation import operation
from ..progress import Out
from ..remote import Fleet
from ..scripts import render


def find_backup(fleet: Fleet, hosts: list[str], path: str) -> list[str]:
    """The hosts whose disk holds `path`, in the order given."""
    found = fleet.parallel(lambda h: h.script(render("is_file", file=path), check=False, timeout=15).ok, hosts)
    return [h for h in hosts if found[h] is True]


def restore(inv: Inventory, path: str, *, confirm, out: Out = print, dry: bool = False,
            lock_wait: float = 0) -> ClusterHealth:
    """`confirm(question) -> bool` is asked before anything changes."""
    with operation(inv, "restore", out=out, lock_wait=lock_wait) as op:
        fleet, progress = op.fleet, op.progress
        health = op.observe()
        running = refusals.restore(health)
        host = refusals.restore_from(path, find_backup(fleet, running, path))
        question = (f"replace every user, roster and other stored table on all {len(running)} nodes with "
                    f"the contents of {path} (on {host})")
        if op.dry_run(dry, f"would take a backup of the present state on {host}, then {question}"):
            return health
        if not confirm(question + "?"):
            raise EasyClusterError("not confirmed: nothing was changed")
        with op.lock(running):
            backup(inv, fleet, host, lambda h, msg: progress.say(h, msg + " (the state before the restore)"),
                   spare=path)   # the rotation must not take the very backup being restored
            with progress.step(host, f"restore {path}"):
                answer = nodectl.restore(fleet[host], path)
            progress.say(host, f"  {len(answer.get('restored', []))} tables restored; "
                               f"{answer.get('registered_users')} registered users")
            with progress.step(host, "every node healthy"):
                health = op.wait_back(inv.node(host))
        users = {n.name: n.registered_users for n in health.nodes}
        if len(set(users.values())) != 1 or answer.get("registered_users") not in users.values():
            raise EasyClusterError(f"restore finished but the nodes disagree: registered users {users}")
        progress.say("cluster", f"verified: every node reports {answer.get('registered_users')} registered users")
        return health
