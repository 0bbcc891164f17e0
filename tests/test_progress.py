"""Progress steps and phases as context managers: the lines operators read, StepFailed, timings."""

from __future__ import annotations

import re

import pytest

from easycluster.errors import EasyClusterError, RemoteError, StepFailed
from easycluster.progress import Progress


def progress() -> tuple[Progress, list[str]]:
    lines: list[str] = []
    return Progress(lines.append), lines


def test_a_step_that_ends_says_ok_with_its_time():
    p, lines = progress()
    with p.step("lab1", "restart"):
        answer = 42
    assert answer == 42
    assert len(lines) == 1 and re.fullmatch(r"\[lab1\] restart: ok \(\d+\.\ds\)", lines[0]), lines


@pytest.mark.parametrize("detail, cause", [("exit 3: boom", "exit 3: boom"), ("", "ejabberdctl restart")])
def test_a_remote_failure_becomes_step_failed_naming_host_step_and_cause(detail, cause):
    p, lines = progress()
    with pytest.raises(StepFailed) as failed:
        with p.step("lab2", "restart"):
            raise RemoteError("lab2", "ejabberdctl restart", detail)
    assert (failed.value.host, failed.value.step, failed.value.cause) == ("lab2", "restart", cause)
    assert str(failed.value) == f"[lab2] restart failed: {cause}"
    assert failed.value.__suppress_context__     # one clear message, not the RemoteError's traceback too
    assert len(lines) == 1 and re.fullmatch(r"\[lab2\] restart: FAILED after \d+\.\ds", lines[0]), lines


def test_other_operator_errors_pass_through_after_saying_failed():
    p, lines = progress()
    inner = StepFailed("lab3", "join", "seed gone")
    with pytest.raises(StepFailed) as failed:
        with p.step("lab3", "join ejabberd@lab1"):
            raise inner
    assert failed.value is inner
    assert re.fullmatch(r"\[lab3\] join ejabberd@lab1: FAILED after \d+\.\ds", lines[0]), lines


def test_a_bug_is_not_a_failed_step():
    p, lines = progress()
    with pytest.raises(KeyError):
        with p.step("lab1", "start"):
            raise KeyError("x")
    assert lines == []


def test_phases_are_timed_in_the_order_they_end_even_when_they_fail():
    p, lines = progress()
    with p.phase("apply"):
        with p.phase("configure"), p.step("lab1", "write ejabberd.yml"):
            pass
        with pytest.raises(EasyClusterError):
            with p.phase("restart lab1"):
                raise EasyClusterError("no")
    assert [name for name, _ in p.phases] == ["configure", "restart lab1", "apply"]
    assert all(secs >= 0 for _, secs in p.phases)
    assert lines[0].startswith("[lab1] write ejabberd.yml: ok (")
