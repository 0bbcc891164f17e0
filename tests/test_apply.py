"""apply.FirstThenRest: the first host's part runs alone, the others' after it (pure logic:
threads and an event, no host)."""

from __future__ import annotations

import threading
import time

import pytest

from easycluster.apply import PHASES, Apply, FirstThenRest


def run_all(order: FirstThenRest, hosts: list[str], work) -> list[str]:
    log: list[str] = []
    threads = [threading.Thread(target=work, args=(order, h, log)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a host was still waiting"
    return log


def part(order, host, log):
    def func():
        log.append(f"{host} start")
        time.sleep(0.05)
        log.append(f"{host} end")
    order.run(host, func)


@pytest.mark.parametrize("hosts", [["a", "b", "c"], ["a"], ["a", "b"]])
def test_the_first_ends_before_any_other_starts(hosts):
    log = run_all(FirstThenRest(hosts), list(reversed(hosts)), part)
    assert log[:2] == ["a start", "a end"] and len(log) == 2 * len(hosts)


def test_a_first_that_fails_in_its_part_lets_the_others_go():
    def failing(order, host, log):
        def func():
            if host == "a":
                raise RuntimeError("boom")
            log.append(host)
        try:
            order.run(host, func)
        except RuntimeError:
            log.append("a failed")
    t0 = time.monotonic()
    log = run_all(FirstThenRest(["a", "b", "c"]), ["c", "b", "a"], failing)
    assert log[0] == "a failed" and sorted(log[1:]) == ["b", "c"] and time.monotonic() - t0 < 5


def test_a_first_that_failed_before_its_part_is_released_and_the_others_go():
    def before(order, host, log):
        if host == "a":
            order.release("a")          # what deploy does when the first host's configure fails
            log.append("a failed before")
            return
        order.run(host, lambda: log.append(host))
    t0 = time.monotonic()
    log = run_all(FirstThenRest(["a", "b"]), ["b", "a"], before)
    assert log == ["a failed before", "b"] and time.monotonic() - t0 < 5


def test_a_host_that_is_not_first_releases_nothing():
    order = FirstThenRest(["a", "b"])
    order.release("b")
    assert not order._done.is_set()


# ---- the phase order: written once (plan.KIND_ORDER), walked by Apply.run through PHASES

def test_every_kind_of_step_is_done_by_exactly_one_phase():
    from easycluster.plan import KIND_ORDER
    taken = [kind for _phase, kinds in PHASES for kind in kinds]
    assert sorted(taken) == sorted(KIND_ORDER), "a kind of step no phase does, or one done twice"


def test_the_phases_run_in_the_order_of_kind_order():
    from easycluster.plan import KIND_ORDER
    first = [min(KIND_ORDER.index(k) for k in kinds) for _phase, kinds in PHASES]
    assert first == sorted(first), "PHASES out of KIND_ORDER's order"
    # each phase's kinds are one stretch of KIND_ORDER: no other phase's kind in between
    for _phase, kinds in PHASES:
        at = sorted(KIND_ORDER.index(k) for k in kinds)
        assert at == list(range(at[0], at[-1] + 1)), f"{sorted(kinds)} is not one stretch of KIND_ORDER"


def test_run_walks_kind_order_calling_each_phase_once_in_order():
    called = []

    class Recording(Apply):
        def __init__(self):   # no fleet, no plan: only the walk is looked at
            pass

        def verify(self):
            called.append("verify")
            return "health"
    for phase, _kinds in PHASES:
        assert callable(getattr(Apply, phase)), f"PHASES names {phase}, which Apply lacks"
        setattr(Recording, phase, lambda self, name=phase: called.append(name))
    assert Recording().run() == "health"
    assert called == [p for p, _ in PHASES] + ["verify"]


class _Fleet:
    """The two things _plugin_donor reads of a fleet: its host names, and a host by name."""
    def __init__(self, names):
        self.hosts = {n: n for n in names}

    def __getitem__(self, name):
        return name


SHA = "current"


@pytest.mark.parametrize("facts, needs_plugin, expected", [
    # (each host's (plugin_sha256, ejabberd, erlang), hosts the plan installs the plugin on, donor)
    ({"lab1": (SHA, "24.12", "27"), "lab4": (None, "24.12", "27")}, ["lab4"], "lab1"),       # add-master
    ({"lab1": ("old", "24.12", "27"), "lab4": (None, "24.12", "27")}, ["lab4"], None),      # a stale plugin
    ({"lab1": (SHA, "23.01", "25"), "lab4": (None, "24.12", "27")}, ["lab4"], None),        # other packages
    ({"lab1": (SHA, "24.12", "27"), "lab4": (None, None, None)}, ["lab4"], "lab1"),         # to be installed
    ({"lab1": (None, "24.12", "27"), "lab2": (None, "24.12", "27")}, ["lab1", "lab2"], None),   # new cluster
    ({"lab1": (SHA, "24.12", "27"), "lab2": (SHA, "24.12", "27")}, [], None),              # nothing to install
])
def test_a_member_with_the_current_plugin_and_the_same_packages_gives_its_beams(facts, needs_plugin, expected,
                                                                                monkeypatch):
    from easycluster import apply
    from easycluster.facts import HostFacts
    from easycluster.plan import PLUGIN, Plan, Step
    monkeypatch.setattr(apply, "plugin_sha256", lambda: SHA)
    hf = {h: HostFacts(host=h, plugin_sha256=p, ejabberd_version=e, erlang_version=o) for h, (p, e, o) in facts.items()}
    plan = Plan([Step(PLUGIN, h, "install the plugin") for h in needs_plugin], seed=None)
    builder = needs_plugin[0] if needs_plugin else None
    assert apply._plugin_donor(_Fleet(list(facts)), plan, hf, builder) == expected
