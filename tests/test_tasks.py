"""The task collection and the commands' one signature (pure: no host). Every command is a
function `(inv, [its own positional arguments], *, out, dry, lock_wait, [its options])` run through
the operation layer; every task that changes the cluster offers --dry and --lock-wait and hands
both on, so a second operator's run can wait for the first, and any change can be previewed."""

from __future__ import annotations

import inspect

import pytest
from invoke import Context

from easycluster.ops import (cookie_rotation, database_members, deploy, heal, migrate, outage, remove, restore,
                             rolling, smoke, status, upgrade)
from easycluster.tasks import cluster, membership as membership_tasks, ns, runbooks, security

# task name -> (the module and name the task calls the command by, the task's other arguments)
CHANGING = {
    "deploy": (cluster, "run_deploy", {}),
    "upgrade": (upgrade, "upgrade", {}),
    "upgrade --revert": (upgrade, "revert", {"revert": True}),
    "migrate-to-sql": (migrate, "migrate_to_sql", {}),
    "add-master": (deploy, "add_master", {"host": "lab4"}),
    "add-satellite": (deploy, "add_satellite", {"host": "lab4"}),
    "remove-node": (remove, "remove_node", {"host": "lab3"}),
    "forget-node": (remove, "forget_node", {"host": "lab3"}),
    "remove-database-host": (database_members, "remove_database_host", {"host": "db3"}),
    "force-database-quorum": (database_members, "force_database_quorum", {"host": "db1", "yes": True}),
    "stop-cluster": (outage, "stop_cluster", {}),
    "start-cluster": (outage, "start_cluster", {}),
    "rolling-restart": (rolling, "rolling_restart", {}),
    "heal": (heal, "heal", {"winner": "lab1"}),
    "restore": (restore, "restore", {"backup": "/b", "yes": True}),
    "rotate-cookie": (security, "run_rotation", {}),
}
READ_ONLY = {"plan": (cluster, "run_deploy"), "status": (status, "cluster_health"), "smoke": (smoke, "smoke"),
             "backup": (remove, "backup_now"), "break-lock": (remove, "break_lock")}
# The commands (the functions the tasks call), by their home module's name.
COMMANDS = [deploy.deploy, deploy.add_master, deploy.add_satellite, upgrade.upgrade, upgrade.revert,
            migrate.migrate_to_sql, remove.remove_node, remove.forget_node, outage.stop_cluster,
            outage.start_cluster, rolling.rolling_restart, heal.heal, restore.restore,
            cookie_rotation.rotate_cookie, database_members.remove_database_host,
            database_members.force_database_quorum]
READERS = [status.cluster_health, smoke.smoke, remove.backup_now, remove.break_lock]


def test_every_task_is_either_changing_or_read_only():
    names = set(ns.task_names) - {n for n in ns.task_names if "." in n}
    assert names == {n.split()[0] for n in CHANGING} | set(READ_ONLY)


@pytest.mark.parametrize("name", sorted(CHANGING))
def test_a_task_that_changes_the_cluster_offers_dry_and_lock_wait_and_passes_them_on(name, monkeypatch):
    module, function, args = CHANGING[name]
    task = ns[name.split()[0]]
    assert "lock_wait" in task.help, f"{name}: no help for --lock-wait"
    assert "dry" in task.help, f"{name}: no help for --dry"
    seen = {}

    def capture(*a, **kw):
        seen.update(kw)
        raise SystemExit(0)     # stop before anything is printed of a result
    monkeypatch.setattr(module, function, capture)
    for tasks_module in (cluster, membership_tasks, runbooks, security):
        monkeypatch.setattr(tasks_module, "inventory_of", lambda _c, _i: object(), raising=False)
    with pytest.raises(SystemExit):
        task(Context(), lock_wait="7.5", dry=True, **args)
    assert seen.get("lock_wait") == 7.5 and seen.get("dry") is True, seen


@pytest.mark.parametrize("command", COMMANDS, ids=lambda f: f"{f.__module__.rsplit('.', 1)[-1]}.{f.__name__}")
def test_every_command_has_the_one_signature(command):
    params = inspect.signature(command).parameters
    first = next(iter(params.values()))
    assert first.name == "inv" and first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for name, default in (("out", print), ("dry", False), ("lock_wait", 0)):
        assert name in params, f"{command.__name__}: no {name}"
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, f"{command.__name__}: {name} is not keyword-only"
        assert params[name].default == default, f"{command.__name__}: {name} defaults to {params[name].default!r}"


@pytest.mark.parametrize("command", READERS, ids=lambda f: f.__name__)
def test_every_read_only_command_takes_out_as_a_keyword(command):
    params = inspect.signature(command).parameters
    assert next(iter(params)) == "inv"
    assert params["out"].kind is inspect.Parameter.KEYWORD_ONLY and "lock_wait" not in params


def test_every_command_runs_through_the_operation_layer():
    """Each command's module sets up its run with operation(): none builds a Fleet, a Progress or
    a ClusterLock of its own."""
    for func in COMMANDS + READERS:
        source = inspect.getsource(inspect.getmodule(func))
        assert "operation(" in inspect.getsource(func) or func in (deploy.add_master, deploy.add_satellite), \
            f"{func.__name__} does not run through operation()"
        for own in ("with Fleet(", "ClusterLock(", "Progress("):
            assert own not in source, f"{func.__module__} builds its own {own.rstrip('(')}"
