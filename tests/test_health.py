"""Health's reading of ejabberd.service's restarts: pure, table-driven, no hosts.

NRestarts counts every restart systemd made since the unit was last started by hand, which
may be weeks ago. A restart loop is told by the unit's last start being recent (the probe's
unit_started_ago), not by the count: crashes hours apart, each followed by a good restart,
are no loop (`fab status` still shows the count beside the unit).
"""

from __future__ import annotations

import re
import subprocess
from importlib import resources

import pytest
import yaml

from casefacts import INVENTORY_PATH, converged, stopped
from easycluster.facts import parse_facts
from easycluster.health import LOOP_WINDOW, assess, restart_loop
from easycluster.inventory import parse_inventory

HOSTS = ["lab1", "lab2", "lab3"]


def inventory():
    return parse_inventory(yaml.safe_dump({
        "cluster": {"name": "t", "ejabberd_version": "23.01-1", "domains": ["t.test"],
                    "cookie": {"file": "/nonexistent/cookie"}},
        "nodes": [{"host": h} for h in HOSTS]}), INVENTORY_PATH)


@pytest.mark.parametrize("restarts, started_ago, loop", [
    (0, None, False),
    (0, 5, False),                  # died once, its first restart pending: no loop yet
    (3, None, False),               # when it last started is unknown: the count alone is no loop
    (1, 60, True),                  # restarted, and dead again a minute later
    (4, 30, True),
    (4, LOOP_WINDOW, True),
    (4, LOOP_WINDOW + 1, False),
    (3, 5 * 3600, False),           # three crashes over the weeks; it had run 5 h since the last
    (12, 40 * 86400, False),
])
def test_a_loop_is_restarts_with_a_recent_start(restarts, started_ago, loop):
    assert restart_loop(restarts, started_ago) is loop


RUNNING = {"LoadState": "loaded", "ActiveState": "active", "SubState": "running", "Result": "success",
           "NRestarts": "0"}
AUTO_RESTART = {"ActiveState": "activating", "SubState": "auto-restart", "Result": "exit-code"}
JOURNAL = "(journal: 2026-12-01T10:00:00 lab2 sh[1]: boom)"
NOW = "now activating (auto-restart) result exit-code) " + JOURNAL
CASES = [
    # a unit not running cleanly, restarts aside: never healthy
    ("deactivating while answering", {"ActiveState": "deactivating", "SubState": "stop-sigterm"}, 3 * 3600, True,
     "ejabberd@lab2: ejabberd.service is deactivating (stop-sigterm), not active (running) " + JOURNAL),
    ("still starting", {"ActiveState": "activating", "SubState": "start", "NRestarts": "3"}, 3 * 3600, False,
     "ejabberd@lab2: ejabberd.service is still starting (activating (start)): ejabberd waits for its tables "
     "(after a full outage: for the node that stopped last) or for its join " + JOURNAL),
    ("failed", {"ActiveState": "failed", "SubState": "failed", "Result": "timeout"}, 3 * 3600, False,
     "ejabberd@lab2: ejabberd.service failed (failed (failed) result timeout) " + JOURNAL),
    ("stopped cleanly", {"ActiveState": "inactive", "SubState": "dead"}, 3 * 3600, False,
     "ejabberd@lab2: not running"),
    ("VM outside the unit", {"ActiveState": "inactive", "SubState": "dead"}, 3 * 3600, True,
     "ejabberd@lab2: ejabberd.service is inactive (dead), not active (running) " + JOURNAL),
    # restarts: a problem only as a recent loop
    # (case, lab2's unit fields changed, unit_started_ago, answering?, lab2's problem or None)
    ("running, no restart", {}, 3 * 3600, True, None),
    ("running, old crashes", {"NRestarts": "7"}, 3 * 3600, True, None),
    ("running, restarted a minute ago", {"NRestarts": "1"}, 60, True, None),
    ("loop", dict(AUTO_RESTART, NRestarts="4"), 30, False,
     "ejabberd@lab2: ejabberd.service is restarting in a loop (4 restarts by systemd, last started 30 s ago, " + NOW),
    ("loop, restarted once", dict(AUTO_RESTART, NRestarts="1"), 9 * 60, False,
     "ejabberd@lab2: ejabberd.service is restarting in a loop (1 restart by systemd, last started 9 min ago, "
     + NOW),
    ("crashes hours apart", dict(AUTO_RESTART, NRestarts="3"), 5 * 3600, False,
     "ejabberd@lab2: ejabberd.service died and systemd is starting it again (3 restarts so far, last started "
     "5 h ago, " + NOW),
    ("crashes days apart", dict(AUTO_RESTART, NRestarts="12"), 3 * 86400, False,
     "ejabberd@lab2: ejabberd.service died and systemd is starting it again (12 restarts so far, last started "
     "3 d ago, " + NOW),
    ("died once", dict(AUTO_RESTART, NRestarts="0"), 20, False,
     "ejabberd@lab2: ejabberd.service died and systemd is starting it again (0 restarts so far, last started "
     "20 s ago, " + NOW),
    ("start unknown", dict(AUTO_RESTART, NRestarts="4"), None, False,
     "ejabberd@lab2: ejabberd.service died and systemd is starting it again (4 restarts so far, " + NOW),
]


@pytest.mark.parametrize("fields, started_ago, answering, expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_unit_not_running_cleanly_is_never_healthy_and_restarts_only_as_a_recent_loop(fields, started_ago, answering, expected):
    inv = inventory()
    facts = {n.host: converged(inv, n.host) for n in inv.nodes}
    for f in facts.values():
        f.unit, f.unit_started_ago = dict(RUNNING), 3 * 3600
    facts["lab2"].unit.update(fields)
    facts["lab2"].unit_started_ago = started_ago
    facts["lab2"].journal = [] if expected is None else ["2026-12-01T10:00:00 lab2 sh[1]: boom"]
    if not answering:
        facts["lab2"] = stopped(facts["lab2"])
    health = assess(inv, facts)
    mine = [p for p in health.problems if p.startswith("ejabberd@lab2")]
    if expected is None:
        assert health.healthy, health.problems
    else:
        assert not health.healthy and mine and mine[0] == expected, mine
    lab2 = next(n for n in health.nodes if n.host == "lab2")
    assert lab2.restarts == int(facts["lab2"].unit.get("NRestarts", "0"))   # what status shows, loop or not


@pytest.mark.parametrize("line, started_ago", [
    ("unit_started_ago=42\n", 42),
    ("unit_started_ago=0\n", 0),
    ("unit_started_ago=\n", None),     # the unit never started ejabberd
    ("unit_started_ago=-3\n", None),
    ("", None),                        # an older probe
])
def test_the_probe_line_is_parsed(line, started_ago):
    f = parse_facts("lab1", "os_id=debian\nsystemd=yes\nunit=LoadState=loaded NRestarts=2 \n" + line + "end=1\n")
    assert f.unit_started_ago == started_ago and f.restarts == 2


# --------------------------------------------------------------------------- the probe's own lines

PROBE = (resources.files("easycluster.scripts") / "probe.sh").read_text()


def started_ago_lines() -> str:
    """The lines of probe.sh that print unit_started_ago: from the systemctl call to the echo."""
    m = re.search(r"^ *started=\$\(systemctl show ejabberd -p ExecMainStartTimestampMonotonic.*?"
                  r"^ *echo \"unit_started_ago=.*?$", PROBE, re.MULTILINE | re.DOTALL)
    assert m, "probe.sh no longer prints unit_started_ago as this test expects"
    return m.group(0)


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


@pytest.mark.parametrize("case, monotonic, expected", [
    ("30 s ago", lambda up: str(int((up - 30) * 1e6)), lambda up: 30),
    ("an hour ago", lambda up: str(int((up - 3600) * 1e6)) if up > 3601 else "1", lambda up: 3600 if up > 3601
     else int(up)),
    ("never started", lambda up: "0", lambda up: None),
    ("no answer", lambda up: "", lambda up: None),
    ("not a number", lambda up: "[not set]", lambda up: None),
    ("after the uptime read (clocks)", lambda up: str(int((up + 100) * 1e6)), lambda up: 0),
])
def test_the_probe_computes_how_long_ago_the_unit_started(case, monotonic, expected):
    up = uptime()
    stub = f"systemctl() {{ printf '%s\\n' '{monotonic(up)}'; }}\n"
    r = subprocess.run(["bash", "-c", stub + started_ago_lines()], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    f = parse_facts("lab1", r.stdout + "end=1\n")
    want = expected(up)
    if want is None:
        assert r.stdout == "unit_started_ago=\n" and f.unit_started_ago is None
    else:
        assert f.unit_started_ago is not None and abs(f.unit_started_ago - want) <= 2, r.stdout


# --------------------------------------------------------------------------- a replicated database

def replicated_inventory():
    return parse_inventory(yaml.safe_dump({
        "cluster": {"name": "t", "ejabberd_version": "24.12-3+deb13u2", "domains": ["t.test"],
                    "cookie": {"file": "/nonexistent/cookie"},
                    "database": {"type": "postgresql", "hosts": ["db1", "db2", "db3"],
                                 "password_file": "/nonexistent/db.password"}},
        "nodes": [{"host": h} for h in HOSTS]}), INVENTORY_PATH)


LEADER, SYNC, REPLICA = ("Leader", "running"), ("Sync Standby", "streaming"), ("Replica", "streaming")


# Patroni's list (member -> role, state; missing: not listed), members down, etcd down, etcd's
# members (as the members' etcd lists them) -> problems
QUORUM = ["db1", "db2", "db3"]
REPLICA_CASES = [
    ("a primary, a synchronous standby, a standby", {"db1": LEADER, "db2": SYNC, "db3": REPLICA}, [], [], QUORUM,
     []),
    ("the primary powered off, not yet replaced", {"db2": SYNC, "db3": REPLICA}, ["db1"], ["db1"], QUORUM,
     ["database member db1: unreachable", "no primary", "etcd (Patroni's quorum store) runs on 2 of 3"]),
    ("no synchronous standby", {"db1": LEADER, "db2": REPLICA, "db3": ("Replica", "starting")}, [], [], QUORUM,
     ["database member db3: starting", "no synchronous standby"]),
    ("etcd below its quorum", {"db1": LEADER, "db2": SYNC, "db3": REPLICA}, [], ["db2", "db3"], QUORUM,
     ["runs on 1 of 3 database hosts: below its quorum of 2"]),
    ("a stale list: the primary and another gone, still listed (etcd without its quorum)",
     {"db1": LEADER, "db2": SYNC, "db3": REPLICA}, ["db1", "db3"], ["db1", "db3"], QUORUM,
     ["database member db1: unreachable", "database member db3: unreachable", "no primary",
      "runs on 1 of 3 database hosts: below its quorum of 2"]),
    ("etcd holds a member the inventory no longer lists", {"db1": LEADER, "db2": SYNC, "db3": REPLICA}, [], [],
     QUORUM + ["db4"], ["etcd holds db4, which cluster.database.hosts does not list: fab remove-database-host "
                        "--host db4"]),
]


@pytest.mark.parametrize("listed, down, etcd_down, quorum, expected", [c[1:] for c in REPLICA_CASES],
                         ids=[c[0] for c in REPLICA_CASES])
def test_a_replicated_databases_members_and_their_problems(listed, down, etcd_down, quorum, expected):
    from easycluster.facts import EtcdMember, ReplicaFacts
    from easycluster.health import replica_health
    inv = replicated_inventory()
    state = [{"Member": m, "Host": f"10.0.0.{i}", "Role": r, "State": s, "Lag in MB": 0}
             for i, (m, (r, s)) in enumerate(listed.items())]
    etcd = [EtcdMember(i + 1, m) for i, m in enumerate(quorum)]
    replicas = {h: (ReplicaFacts(h, error="Connect failed") if h in down else
                    ReplicaFacts(h, members=state, etcd_active=h not in etcd_down, etcd_data=True, patroni_active=True,
                                 etcd_members=[] if h in etcd_down else etcd)) for h in ("db1", "db2", "db3")}
    members, problems = replica_health(inv, replicas)
    assert [m["host"] for m in members] == ["db1", "db2", "db3"]
    assert len(problems) == len(expected), problems
    for want, got in zip(expected, problems):
        assert want in got, (want, got)


# replicated.ready: what deploy waits for after provisioning (Patroni's list -> what is missing),
# of the members named (db1..db3; db4: a member being taken out, still listed until its lease ends)
READY_CASES = [
    ("ready", [LEADER, SYNC, REPLICA], None),
    ("a member not listed yet", [LEADER, SYNC], "2 of 3 members known to Patroni"),
    ("no primary", [SYNC, REPLICA, REPLICA], "no primary yet"),
    ("no synchronous standby", [LEADER, REPLICA, REPLICA], "no synchronous standby yet"),
    ("a member still copying", [LEADER, SYNC, ("Replica", "creating replica")], "db3 not streaming yet"),
    ("a member leaving is not waited for", [LEADER, SYNC, REPLICA, ("Replica", "stopped")], None),
    ("a leaving member's synchronous standby is not one", [LEADER, REPLICA, REPLICA, SYNC],
     "no synchronous standby yet"),
]


@pytest.mark.parametrize("listed, missing", [c[1:] for c in READY_CASES], ids=[c[0] for c in READY_CASES])
def test_deploy_waits_for_a_primary_with_a_synchronous_standby(listed, missing):
    from easycluster.replicated import leader, ready
    state = [{"Member": f"db{i + 1}", "Host": f"10.0.0.{i + 1}", "Role": r, "State": s} for i, (r, s) in enumerate(listed)]
    assert ready(state, ["db1", "db2", "db3"]) == missing
    assert (leader(state) or {}).get("Member") == next((m["Member"] for m in state if m["Role"] == "Leader"), None)
