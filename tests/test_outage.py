"""start-cluster does not wait its whole --wait for nodes that cannot come back (pure: no lab).

worth_waiting_for (which survivors to wait for) is a table; the wait itself runs against a
fake of the cluster's watch and the fact probe.
"""

from __future__ import annotations

import pytest
import yaml

from casefacts import INVENTORY_PATH
from easycluster import probe
from easycluster.ops import outage
from easycluster.errors import EasyClusterError
from easycluster.facts import HostFacts
from easycluster.health import ClusterHealth
from easycluster.inventory import parse_inventory
from easycluster.progress import Progress

HOSTS = ["lab1", "lab2", "lab3"]
INV = parse_inventory(yaml.safe_dump({
    "cluster": {"name": "t", "ejabberd_version": "24.12-3+deb13u2", "domains": ["t.test"],
                "cookie": {"file": "/nonexistent/cookie"}},
    "nodes": [{"host": h} for h in HOSTS]}), INVENTORY_PATH)
STOPPED_LAB1_LAST = ["ejabberd@lab3", "ejabberd@lab2", "ejabberd@lab1"]


@pytest.mark.parametrize("cannot, order, forced, waited", [
    # every survivor can start: all are waited for, with or without a record
    (set(), STOPPED_LAB1_LAST, False, HOSTS),
    (set(), [], False, HOSTS),
    # the node that stopped last cannot start: the others wait for its tables, forever
    ({"lab1"}, STOPPED_LAB1_LAST, False, []),
    ({"lab1", "lab2"}, STOPPED_LAB1_LAST, False, []),
    # another one cannot: the others load from the last one, and are worth waiting for
    ({"lab3"}, STOPPED_LAB1_LAST, False, ["lab1", "lab2"]),
    # no record of who stopped last (a power cut): it may be the one that cannot start
    ({"lab3"}, [], False, []),
    # --without: a survivor loaded its own copies, the others load from it
    ({"lab3"}, [], True, ["lab1", "lab2"]),
    ({"lab1"}, STOPPED_LAB1_LAST, True, ["lab2", "lab3"]),
    # nobody can start
    (set(HOSTS), STOPPED_LAB1_LAST, False, []),
])
def test_which_survivors_are_worth_waiting_for(cannot, order, forced, waited):
    assert [n.host for n in outage.worth_waiting_for(list(INV.nodes), cannot, order, forced)] == waited


# --------------------------------------------------------------------------- the wait, faked

def facts(order: list[str]) -> dict[str, HostFacts]:
    record = {"order": order, "when": "2026-12-07T00:00:00Z"} if order else None
    return {h: HostFacts(host=h, stop_order=record) for h in HOSTS}


@pytest.fixture
def wait_back(monkeypatch):
    """run(cannot, order, forced) -> (the advice raised or None, the nodes the watch waited for,
    the hosts probed for their VMs)."""
    def run(cannot: set[str], order: list[str], forced: bool = False):
        watched, probed = [], []

        def wait_for(inv, fleet, ready, bound, what, interval=1.0):
            watched.append(what)
            return ClusterHealth([])

        def gather(fleet, hosts=None, probe_network=True):
            probed.append(sorted(hosts))
            return {h: (HostFacts(host=h, error="unreachable") if h in cannot else
                        HostFacts(host=h, ctl_status=3, beam_running=True)) for h in hosts}
        monkeypatch.setattr(outage, "wait_for", wait_for)
        monkeypatch.setattr(probe, "gather", gather)
        try:
            outage._wait_back(INV, None, Progress(lambda line: None), list(INV.nodes), facts(order), cannot,
                              forced, 120)
        except EasyClusterError as exc:
            return str(exc), watched, probed
        return None, watched, probed
    return run


def test_a_dead_node_that_stopped_last_gets_the_advice_at_once(wait_back):
    advice, watched, probed = wait_back({"lab1"}, STOPPED_LAB1_LAST)
    assert watched == []                                  # no wait for "all back"
    assert probed[0] == ["lab2", "lab3"]                  # their VMs seen up, then the advice
    assert advice.splitlines() == [                       # as after a whole wait, but said at once
        "the cluster cannot come back whole (lab1 cannot start; the others were not waited for beyond what they "
        "can do):",
        "  ejabberd@lab1: unreachable over SSH",
        "  ejabberd@lab2: its VM runs, but ejabberd waits for tables held by nodes not back",
        "  ejabberd@lab3: its VM runs, but ejabberd waits for tables held by nodes not back",
        "  `fab stop-cluster` stopped ejabberd@lab1 last: it holds the newest data",
        "bring ejabberd@lab1 back (boot the host), then `fab start-cluster` again;",
        "if lost for good: `fab start-cluster --without lab1` (the others load their own copies; writes only "
        "the lost nodes had are gone), then `fab forget-node --host lab1`"]


def test_the_others_are_waited_for_when_they_can_come_back_then_the_advice(wait_back):
    advice, watched, _ = wait_back({"lab3"}, STOPPED_LAB1_LAST)
    assert watched == ["all back"] and advice.startswith("the cluster cannot come back whole (lab3 cannot start")
    assert "bring ejabberd@lab3 back (boot the host)" in advice


def test_a_cluster_that_can_all_start_is_waited_for_and_no_advice(wait_back):
    advice, watched, probed = wait_back(set(), STOPPED_LAB1_LAST)
    assert advice is None and watched == ["all back"] and probed == []
