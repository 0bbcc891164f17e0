"""One error hierarchy: every operator-facing exception is an EasyClusterError, defined in
easycluster/errors.py and imported from there (no module re-exports it: test_layers.py), and
reported by a task as `error: <message>` with exit 1 and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke.exceptions import Exit

from easycluster import errors
from easycluster.lock import describe_holder
from easycluster.plan import Problem
from easycluster.tasks._common import operator_errors

# (the exception as raised, its message)
ERRORS = [
    (errors.EasyClusterError("inventory inventory.yml not found"), "inventory inventory.yml not found"),
    (errors.InventoryError(Path("/inv/t.yml"), ["cluster.name: missing"]),
     "invalid inventory (1 problem):\n  /inv/t.yml: cluster.name: missing"),
    (errors.RemoteError("lab1", "ejabberdctl restart", "exit 1"), "lab1: ejabberdctl restart: exit 1"),
    (errors.RemoteOverdue("lab2", "following the join", "not done within 3600s"),
     "lab2: following the join: not done within 3600s"),
    (errors.JoinFailed("lab2", "the seed is not running"), "lab2: join failed: the seed is not running"),
    (errors.StepFailed("lab1", "restart", "exit 1"), "[lab1] restart failed: exit 1"),
    (errors.PreflightFailed([Problem("lab2", "ssh", "unreachable", "check the host")]),
     "preflight failed:\nhost  check  problem      what to do\n" + "-" * 36 + "\nlab2  ssh    unreachable  check the host"),
    (errors.LockHeld("lab1", {}, describe_holder({})),   # as lock.py raises it
     "the cluster is locked (holder unknown: the lock is being taken or was left half-made)\n"
     "  wait for it to finish; if that run is dead, `fab break-lock` removes the lock"),
    (errors.MembershipError("refusing to remove ejabberd@lab1: it is the only running master"),
     "refusing to remove ejabberd@lab1: it is the only running master"),
    (errors.SqlError("cannot reach db:5432 from lab1 (Connection refused)"),
     "cannot reach db:5432 from lab1 (Connection refused)"),
]


@pytest.mark.parametrize("exc, message", ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_every_operator_error_is_an_easycluster_error_reported_as_one_error_line(exc, message):
    cls = type(exc)
    assert issubclass(cls, errors.EasyClusterError) and cls.__module__ == "easycluster.errors"
    assert str(exc) == message

    @operator_errors
    def task():
        raise exc

    with pytest.raises(Exit) as exited:
        task()
    assert exited.value.code == 1
    assert exited.value.message == f"error: {message}"
    assert exited.value.__cause__ is None and exited.value.__suppress_context__   # no traceback


def test_every_exception_class_of_errors_py_is_in_the_table():
    defined = {obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, BaseException)}
    assert defined == {type(e) for e, _ in ERRORS}


def test_a_bug_is_not_turned_into_an_error_line():
    @operator_errors
    def task():
        raise KeyError("x")

    with pytest.raises(KeyError):
        task()
