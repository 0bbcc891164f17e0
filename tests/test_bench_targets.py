"""`make bench`'s targets table (issue 31's labels and bounds), from medians: pure."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

LABELS = [
    "3-node deploy / bare sequential runbook",
    "8-node deploy / bare sequential runbook",
    "add-master / manual join_cluster (10000 users)",
    "add-master / manual join_cluster (100000 users)",
    "add-master / manual join_cluster (1000000 users)",
    "rolling restart: longest time without service per node (s)",
]

FULL = {"deploy 3 nodes": 6.0, "baseline 3 nodes": 12.0, "deploy 8 nodes": 20.0, "baseline 8 nodes": 40.0,
        "add-master, 10000 users": 4.0, "manual join_cluster, 10000 users": 5.0,
        "add-master, 100000 users": 6.0, "manual join_cluster, 100000 users": 6.0,
        "add-master, 1000000 users": 14.0, "manual join_cluster, 1000000 users": 20.0,
        "  longest without service per node, 100000 users": 2.5,
        "no-op deploy 3 nodes": 1.0, "ssh connections (max per host)": 1.0}


@pytest.mark.parametrize("med, expected", [
    # (medians, {label: measured}) : every target under the issue's label, in its order
    (FULL, {LABELS[0]: 0.5, LABELS[1]: 0.5, LABELS[2]: 0.8, LABELS[3]: 1.0, LABELS[4]: 0.7, LABELS[5]: 2.5}),
    # a run at 100,000 users: the 1M row is there, not measured
    ({k: v for k, v in FULL.items() if "1000000" not in k}, {LABELS[4]: None}),
    # the rolling restart's target reads the 100,000-user round, not a layout's
    ({**FULL, "  longest without service per node, 100000 users, disc_copies": 1.0}, {LABELS[5]: 2.5}),
])
def test_the_targets_table_has_issue_31s_rows(med, expected):
    rows = bench.Bench.targets(med)
    assert [name for name, _, _ in rows][:6] == LABELS
    got = {name: value for name, value, _ in rows}
    for label, value in expected.items():
        assert got[label] == (pytest.approx(value) if value is not None else None), label
    bounds = {name: bound for name, _, bound in rows}
    assert [bounds[label] for label in LABELS] == [0.6, 0.6, 0.8, 0.8, 0.7, 3]


def test_a_layouts_results_have_keys_of_their_own():
    assert bench.roll_tag(100_000) == "100000 users"
    assert bench.roll_tag(100_000, "disc_copies") == "100000 users, disc_copies"


JOURNAL = """\
1765130337.371843 lab3 systemd[1]: Stopping ejabberd.service - robust, scalable and extensible realtime platform...
1765130337.425192 lab3 sh[8676]: 2026-12-07 18:17:57.419870+00:00 [info] SIGTERM received: ejabberd and Mnesia stop, then the VM halts (easy_cluster_stop)
1765130337.548945 lab3 systemd[1]: ejabberd.service: Deactivated successfully.
1765130337.652415 lab3 systemd[1]: Starting ejabberd.service - robust, scalable and extensible realtime platform...
1765130338.441733 lab3 sh[9561]: 2026-12-07 18:17:58.439323+00:00 [info] Loading configuration from /etc/ejabberd/ejabberd.yml
1765130338.689738 lab3 sh[9561]: 2026-12-07 18:17:58.689447+00:00 [info] Configuration loaded successfully
1765130340.366046 lab3 sh[9561]: 2026-12-07 18:18:00.365754+00:00 [info] Loading modules for dev.test
1765130340.865524 lab3 sh[9561]: 2026-12-07 18:18:00.864812+00:00 [info] Waiting for Mnesia synchronization to complete
1765130340.898727 lab3 sh[9561]: 2026-12-07 18:18:00.897351+00:00 [info] Start accepting TCP connections at [::]:5222 for ejabberd_c2s
"""


@pytest.mark.parametrize("journal, expected", [
    (JOURNAL, "stop 0.12, to the start 0.10, VM boot 0.79, configuration 0.25, Mnesia and its tables 1.68, "
              "modules (the user count among them) 0.50, listeners 0.03 (in all 3.47)"),
    ("1765130337.3 lab3 systemd[1]: Started ejabberd.service\n", "no restart found"),
    # a span whose line is missing is named, the next measured from the last line found
    (JOURNAL.replace("Configuration loaded successfully", "something else"),
     "stop 0.12, to the start 0.10, VM boot 0.79, configuration ?, Mnesia and its tables 1.92, "
     "modules (the user count among them) 0.50, listeners 0.03 (in all 3.47)"),
])
def test_a_restarts_journal_gives_its_spans(journal, expected, monkeypatch):
    b = bench.Bench.__new__(bench.Bench)
    monkeypatch.setattr(b, "ssh", lambda host, command: journal, raising=False)
    assert b.timeline("lab3", 0) == expected
