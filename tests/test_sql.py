"""easycluster.sql: ejabberd's PostgreSQL schema steps that easycluster applies in an upgrade,
and the pure choice of them (refusals.sql_schema_steps). The statements themselves are proven
on the lab (test_database: the upgraded database compared with the new release's pg.new.sql)."""

from __future__ import annotations

from pathlib import Path

import pytest

from easycluster import refusals, sql
from easycluster.facts import HostFacts
from easycluster.health import ClusterHealth
from easycluster.inventory import load_inventory
from easycluster.ops.upgrade import FULL_STOP, UpgradeFacts, format_upgrade_plan, plan_upgrade

OLD, BPO12, DEB13, BPO13 = "23.01-1", "24.12-3~bpo12+1", "24.12-3+deb13u2", "26.07-1~bpo13+1"
HOSTS = ["lab1", "lab2", "lab3"]


def test_each_step_file_is_a_known_step_with_its_applied_query():
    found = sql.steps()
    assert list(found) == [(25, 3), (26, 1), (26, 3)]
    for at, step in found.items():
        assert at in refusals.SQL_SCHEMA_STEPS
        assert step.applied.startswith("SELECT "), step.label
        statements = [line for line in step.sql.splitlines() if line and not line.startswith("--")]
        assert statements and not any("BEGIN" in s or "COMMIT" in s for s in statements), \
            f"{step.label}: the caller's transaction holds every step"
    assert found[(25, 3)].label == "25.03"


# running versions, pinned -> (steps up, steps down)
STEPS = [
    ([DEB13, DEB13], BPO13, ([(25, 3), (26, 1), (26, 3)], [])),
    ([BPO13, DEB13], BPO13, ([(25, 3), (26, 1), (26, 3)], [])),      # half-way: the rest, the same steps
    ([BPO13], BPO13, ([], [])),
    ([BPO13], DEB13, ([], [(25, 3), (26, 1), (26, 3)])),
    ([OLD], BPO12, ([(23, 4), (24, 2)], [])),
    ([BPO12], DEB13, ([], [])),                                     # the OS move: same upstream
    (["-", DEB13], "26.01-1", ([(25, 3), (26, 1)], [])),            # a host without ejabberd: not counted
    (["-"], BPO13, ([], [])),
]


@pytest.mark.parametrize("running, pinned, expected", STEPS, ids=[f"{r}->{p}" for r, p, _ in STEPS])
def test_the_steps_between_the_running_versions_and_the_pinned_one(running, pinned, expected):
    assert refusals.sql_schema_steps(pinned, running) == expected


def inventory(tmp_path: Path, version: str, database: bool = True):
    text = (f"cluster:\n  name: t\n  ejabberd_version: \"{version}\"\n  domains: [t.test]\n"
            f"  cookie: {{file: {tmp_path}/cookie}}\n"
            + (f"  database: {{type: postgresql, host: db1, password_file: {tmp_path}/db.password}}\n"
               if database else "")
            + "nodes:\n" + "".join(f"  - host: {h}\n" for h in HOSTS))
    path = tmp_path / "inventory.yml"
    path.write_text(text)
    return load_inventory(str(path), None)


def plan_for(tmp_path, running: str, pinned: str, database: bool = True):
    inv = inventory(tmp_path, pinned, database)
    facts = {h: HostFacts(host=h, os_id="debian", os_version="13", ejabberd_version=running) for h in HOSTS}
    ufacts = {h: UpgradeFacts(h, installable=True, changes=["ejabberd"], mnesia_bytes=2**20, free_bytes=2**30)
              for h in HOSTS}
    ufacts["lab1"].tables = {"s2s": {"record_name": "s2s", "attributes": ["fromto", "pid"], "size": 0}}
    ufacts["lab1"].records = {}
    return inv, plan_upgrade(inv, facts, ufacts, ClusterHealth([], []))


def test_a_sql_cluster_across_steps_stops_fully_and_the_plan_says_when_the_steps_run(tmp_path):
    inv, plan = plan_for(tmp_path, DEB13, BPO13)
    assert (plan.strategy, plan.problems, plan.sql_steps) == (FULL_STOP, [], [(25, 3), (26, 1), (26, 3)])
    assert "with every node stopped, before the first node of 26.07-1~bpo13+1 starts" in plan.reason
    assert "25.03: users.\"type\"" in plan.reason
    text = format_upgrade_plan(plan, inv)
    assert "  database: with every node stopped, a pg_dump (the way back across the steps), then the schema " \
           "steps 25.03, 26.01, 26.03 in one transaction" in text, text


def test_the_same_upgrade_in_mnesia_takes_no_schema_step(tmp_path):
    _, plan = plan_for(tmp_path, DEB13, "25.01-1~bpo13+1", database=False)
    assert plan.sql_steps == [] and plan.strategy != FULL_STOP
    _, plan = plan_for(tmp_path, DEB13, "25.01-1~bpo13+1")
    assert plan.sql_steps == [] and plan.strategy != FULL_STOP       # 25.01: no step between
