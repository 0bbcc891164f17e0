"""The task collection (pure: no host). Every task that changes the cluster offers --lock-wait
and hands it to the operation it runs: a second operator's run waits for the first instead of
being refused, whichever command it is."""

from __future__ import annotations

import pytest
from invoke import Context

from easycluster import deploy, heal, membership, migrate, outage, restore, rolling, upgrade
from easycluster.tasks import cluster, membership as membership_tasks, ns, runbooks, security

# task name -> (the module and name the task calls it by, its other arguments, how the lock wait
# arrives: as lock_wait=, or as the n-th positional argument)
CHANGING = {
    "deploy": (cluster, "run_deploy", {}, "lock_wait"),
    "upgrade": (upgrade, "upgrade", {}, "lock_wait"),
    "upgrade --revert": (upgrade, "revert", {"revert": True}, "lock_wait"),
    "migrate-to-sql": (migrate, "migrate_to_sql", {}, "lock_wait"),
    "add-master": (deploy, "add_master", {"host": "lab4"}, "lock_wait"),
    "add-satellite": (deploy, "add_master", {"host": "lab4"}, "lock_wait"),
    "remove-node": (membership, "remove_node", {"host": "lab3"}, 3),
    "forget-node": (membership, "forget_node", {"host": "lab3"}, 2),
    "stop-cluster": (outage, "stop_cluster", {}, 2),
    "start-cluster": (outage, "start_cluster", {}, 4),
    "rolling-restart": (rolling, "rolling_restart", {}, 3),
    "heal": (heal, "heal", {"winner": "lab1"}, 3),
    "restore": (restore, "restore", {"backup": "/b", "yes": True}, 4),
    "rotate-cookie": (security, "run_rotation", {}, "lock_wait"),
}
READ_ONLY = {"plan", "status", "smoke", "backup", "break-lock"}


def test_every_task_is_either_changing_or_read_only():
    names = set(ns.task_names) - {n for n in ns.task_names if "." in n}
    assert names == {n.split()[0] for n in CHANGING} | READ_ONLY


@pytest.mark.parametrize("name", sorted(CHANGING))
def test_a_task_that_changes_the_cluster_offers_lock_wait_and_passes_it_on(name, monkeypatch):
    module, function, args, where = CHANGING[name]
    task = ns[name.split()[0]]
    assert "lock_wait" in task.help, f"{name}: no help for --lock-wait"
    seen = {}

    def capture(*a, **kw):
        seen["value"] = kw["lock_wait"] if where == "lock_wait" else a[where]
        raise SystemExit(0)     # stop before anything is printed of a result
    monkeypatch.setattr(module, function, capture)
    for tasks_module in (cluster, membership_tasks, runbooks, security):
        monkeypatch.setattr(tasks_module, "inventory_of", lambda _c, _i: _Inventory(), raising=False)
    with pytest.raises(SystemExit):
        task(Context(), lock_wait="7.5", **args)
    assert seen["value"] == 7.5


class _Inventory:
    """Enough of an inventory for a task to hand on (never read: the operation is replaced)."""
    def node(self, host):
        return host
