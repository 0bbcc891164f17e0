"""The sides of a partition and what a heal restarts: pure, table-driven, no hosts."""

from __future__ import annotations

import pytest

from easycluster.health import assess
from easycluster.refusals import sides
from test_plan import HOSTS, converged, inventory, stopped

L1, L2, L3 = (f"ejabberd@{h}" for h in HOSTS)

CASES = [
    # (case, running_db_nodes per host (None: stopped), partitioned_with per host, winner,
    #  expected partitioned, expected sides)
    ("healthy", {h: [L1, L2, L3] for h in HOSTS}, {}, None, False, [[L1, L2, L3]]),
    ("one node down is no partition", {"lab1": [L1, L3], "lab2": None, "lab3": [L1, L3]}, {}, "lab1",
     False, [[L1, L3]]),
    ("cut off: views differ", {"lab1": [L1, L2], "lab2": [L1, L2], "lab3": [L3]}, {}, None,
     True, [[L1, L2], [L3]]),
    ("cut off, winner on the small side", {"lab1": [L1, L2], "lab2": [L1, L2], "lab3": [L3]}, {}, "lab3",
     True, [[L1, L2], [L3]]),
    ("link back, views agree, Mnesia's record tells the sides",
     {h: [L1, L2, L3] for h in HOSTS}, {"lab1": [L3], "lab2": [L3], "lab3": [L1, L2]}, "lab1",
     True, [[L1, L2], [L3]]),
    ("link back, winner on the other side", {h: [L1, L2, L3] for h in HOSTS},
     {"lab1": [L3], "lab2": [L3], "lab3": [L1, L2]}, "lab3", True, [[L1, L2], [L3]]),
    ("link back, no winner named yet", {h: [L1, L2, L3] for h in HOSTS}, {"lab3": [L1]}, None,
     True, [[L1, L2, L3]]),
]


@pytest.mark.parametrize("running, split, winner, partitioned, expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_partition_and_its_sides(running, split, winner, partitioned, expected):
    inv = inventory()
    facts = {}
    for h in HOSTS:
        f = converged(inv, h)
        if running[h] is None:
            f = stopped(f)
        else:
            f.cluster_status["running_db_nodes"] = running[h]
            f.cluster_status["partitioned_with"] = split.get(h, [])
        facts[h] = f
    health = assess(inv, facts)
    assert health.partitioned is partitioned
    assert sides(health, f"ejabberd@{winner}" if winner else None) == expected
    if split:
        assert any("Mnesia reported a partition with" in p for p in health.problems)
