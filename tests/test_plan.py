"""Preflight and plan: pure functions of inventory + facts, table-driven, no hosts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from easycluster import plan as planmod
from easycluster.facts import HostFacts, parse_facts
from easycluster.health import assess
from easycluster.inventory import parse_inventory
from easycluster.plan import format_plan, make_plan
from easycluster.render import COOKIE_PATH, EJABBERD_DEFAULT, EJABBERD_YML, FIREWALL_RULES, managed_files
from easycluster.secrets import Secret

COOKIE = Secret("C" * 40)
PLUGIN_SHA = "p" * 64
HOSTS = ["lab1", "lab2", "lab3"]
IPS = {"lab1": "10.9.0.11", "lab2": "10.9.0.12", "lab3": "10.9.0.13"}
NAMES = [f"ejabberd@{h}" for h in HOSTS]
TABLES = {"passwd": "disc_only_copies", "roster": "disc_only_copies", "session": "ram_copies"}


def inventory(**cluster_overrides):
    data = {"cluster": {"name": "t", "ejabberd_version": "23.01-1", "domains": ["t.test"],
                        "cookie": {"file": "/nonexistent/cookie"}, **cluster_overrides},
            "nodes": [{"host": h} for h in HOSTS]}
    return parse_inventory(yaml.safe_dump(data), Path("/inv/t.yml"))


@pytest.fixture(autouse=True)
def fixed_plugin(monkeypatch):
    monkeypatch.setattr(planmod, "plugin_sha256", lambda: PLUGIN_SHA)


def fresh(host: str) -> HostFacts:
    """A new Debian server: reachable, resolving every node, nothing installed."""
    return HostFacts(host=host, os_id="debian", os_version="12", hostname=host, addresses=[IPS[host]], systemd=True, nft=True,
                     files={EJABBERD_YML: None, EJABBERD_DEFAULT: None},
                     resolves=dict(IPS), reach={(h, p): "refused" for h in HOSTS if h != host
                                                for p in [4369] + list(range(4370, 4380))})


def status(host: str, db_nodes=NAMES, running=None, users=0, tables=TABLES) -> dict:
    running = db_nodes if running is None else running
    return {"node": f"ejabberd@{host}", "db_nodes": list(db_nodes), "running_db_nodes": list(running),
            "master": True, "missing_tables": [], "sessions": 0, "registered_users": users,
            "tables": {t: {n: typ for n in db_nodes} for t, typ in tables.items()}, "started_at": 1}


def converged(inv, host: str, **status_kw) -> HostFacts:
    """A running master whose files, cookie and plugin all match the inventory."""
    f = fresh(host)
    f.ejabberd_version, f.erlang_version = "23.01-1", "1:25.2.3"
    node = inv.node(host)
    for mf in managed_files(inv, node, IPS[host], COOKIE, members=list(IPS.values())):
        if mf.secret:
            f.cookie_sha256 = mf.sha256()
        else:
            f.files[mf.path] = mf.data().decode()
    f.plugin_sha256 = PLUGIN_SHA
    f.ctl_status, f.beam_running, f.mnesia_schema = 0, True, True
    f.cluster_status = status(host, **status_kw)
    return f


def stopped(f: HostFacts) -> HostFacts:
    f = copy.deepcopy(f)
    f.ctl_status, f.beam_running, f.cluster_status = 3, False, None
    return f


def kinds(plan):
    return [(s.kind, s.host) for s in plan.steps]


def test_fresh_hosts_get_everything_then_joins_in_inventory_order():
    inv = inventory()
    plan = make_plan(inv, {h: fresh(h) for h in HOSTS}, COOKIE)
    assert plan.problems == []
    assert kinds(plan) == (
        [("install", h) for h in HOSTS]
        # firewall unit and rules, epmd.socket and ejabberd.service drop-ins, /etc/default, yml, cookie
        + [("write", h) for h in HOSTS for _ in range(7)]
        + [("plugin", h) for h in HOSTS]
        + [("start", h) for h in HOSTS]
        + [("join", "lab2"), ("join", "lab3")])
    assert {s.seed for s in plan.by_kind("join")} == {"ejabberd@lab1"}


def test_a_converged_cluster_needs_nothing():
    inv = inventory()
    plan = make_plan(inv, {h: converged(inv, h) for h in HOSTS}, COOKIE)
    assert plan.steps == [] and plan.problems == []
    assert format_plan(plan, inv) == "no changes: the cluster matches the inventory"


def test_an_ejabberd_yml_change_is_reloaded_not_restarted_and_diffed():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    plan = make_plan(inventory(loglevel="warning"), facts, COOKIE)
    assert kinds(plan) == [("write", h) for h in HOSTS] + [("reload", h) for h in HOSTS]
    diff = plan.steps[0].diff
    changed = [l for l in diff.splitlines() if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    assert changed == ["-loglevel: info", "+loglevel: warning"]


def test_a_distribution_change_restarts_each_node():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    plan = make_plan(inventory(distribution={"port_min": 4380, "port_max": 4389}), facts, COOKIE)
    assert kinds(plan) == [("write", h) for h in HOSTS for _ in range(2)] + [("restart", h) for h in HOSTS]
    writes = {(s.host, s.file.path): s.diff for s in plan.by_kind("write")}
    assert all("FIREWALL_WINDOW=4380-4389" in writes[(h, EJABBERD_DEFAULT)] for h in HOSTS)
    # the firewall follows the window (applied in place: it is no reason to restart)
    assert all("+\t\ttcp dport { 4369, 4380-4389 } ip saddr @members accept" in writes[(h, FIREWALL_RULES)]
               for h in HOSTS), writes[("lab1", FIREWALL_RULES)]


def test_a_changed_plugin_is_installed_and_restarts_the_node():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    facts["lab2"].plugin_sha256 = "old"
    assert kinds(make_plan(inv, facts, COOKIE)) == [("plugin", "lab2"), ("restart", "lab2")]


def test_a_restart_left_pending_by_a_dead_run_is_done_by_the_next():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    facts["lab3"].restart_pending = True
    plan = make_plan(inv, facts, COOKIE)
    assert kinds(plan) == [("restart", "lab3")]
    assert "left pending by an earlier run" in plan.steps[0].summary


def test_a_stopped_member_is_started_not_joined():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    facts["lab3"] = stopped(facts["lab3"])
    for h in ("lab1", "lab2"):
        facts[h].cluster_status["running_db_nodes"] = NAMES[:2]
    assert kinds(make_plan(inv, facts, COOKIE)) == [("start", "lab3")]


def test_a_new_host_joins_the_running_cluster():
    inv = inventory()
    facts = {h: converged(inv, h, db_nodes=NAMES[:2]) for h in HOSTS[:2]}
    facts["lab3"] = fresh("lab3")
    plan = make_plan(inv, facts, COOKIE)
    assert [k for k in kinds(plan) if k[1] != "lab3"] == []
    assert plan.by_kind("join")[0].seed == "ejabberd@lab1"


def test_the_seed_is_the_running_cluster_even_if_the_first_node_is_down():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    facts["lab1"] = stopped(facts["lab1"])
    plan = make_plan(inv, facts, COOKIE)
    assert plan.seed.host == "lab2"
    assert kinds(plan) == [("start", "lab1")]


def test_the_cookie_never_appears_in_a_plan():
    inv = inventory()
    text = format_plan(make_plan(inv, {h: fresh(h) for h in HOSTS}, COOKIE), inv)
    assert COOKIE.reveal() not in text
    assert f"{COOKIE_PATH}: created (content redacted)" in text


def problems_for(mutate) -> list:
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    mutate(facts)
    return [(p.host, p.check) for p in make_plan(inv, facts, COOKIE).problems]


def _set(host, **attrs):
    def mutate(facts):
        for k, v in attrs.items():
            setattr(facts[host], k, v)
    return mutate


def _resolve(host, name, addr):
    def mutate(facts):
        facts[host].resolves[name] = addr
    return mutate


def _block(host, peer):
    def mutate(facts):
        for key in list(facts[host].reach):
            if key[0] == peer:
                facts[host].reach[key] = "timeout"
    return mutate


def _status(host, **fields):
    def mutate(facts):
        facts[host].cluster_status.update(fields)
    return mutate


PREFLIGHT = [
    ("unreachable", _set("lab2", error="unreachable over SSH: timed out"), [("lab2", "ssh")]),
    ("not debian", _set("lab3", os_id="fedora"), [("lab3", "os")]),
    ("other version", _set("lab1", ejabberd_version="21.01-2"), [("lab1", "version")]),
    ("erlang differs", _set("lab2", erlang_version="1:24.0"), [("*", "version")]),
    ("own name on loopback", _resolve("lab1", "lab1", "127.0.1.1"),
     [("lab1", "resolve"), ("lab2", "resolve"), ("lab3", "resolve")]),
    ("peer misresolved", _resolve("lab2", "lab3", "10.9.0.99"), [("lab2", "resolve")]),
    ("peer unresolved", _resolve("lab3", "lab1", None), [("lab3", "resolve")]),
    ("distribution blocked", _block("lab1", "lab3"), [("lab1", "network")]),
    ("cookie differs", _set("lab2", cookie_sha256="0" * 64), [("lab2", "cookie")]),
    ("runs as other name", _status("lab3", node="ejabberd@localhost"), [("lab3", "node name")]),
    ("vm under other name", _set("lab2", beam_node="ejabberd@elsewhere"), [("lab2", "node name")]),
    ("no systemd", _set("lab1", systemd=False), [("lab1", "init")]),
]


@pytest.mark.parametrize("mutate, expected", [(m, e) for _, m, e in PREFLIGHT], ids=[c for c, _, _ in PREFLIGHT])
def test_preflight_refuses_with_host_and_check(mutate, expected):
    assert problems_for(mutate) == expected


def test_a_standalone_node_with_users_is_never_joined():
    inv = inventory()
    facts = {h: converged(inv, h, db_nodes=NAMES[:2]) for h in HOSTS[:2]}
    facts["lab3"] = converged(inv, "lab3", db_nodes=["ejabberd@lab3"], users=12)
    plan = make_plan(inv, facts, COOKIE)
    assert plan.steps == [] and [(p.host, p.check) for p in plan.problems] == [("lab3", "membership")]
    assert "12 registered users" in plan.problems[0].detail


def test_a_member_of_another_cluster_is_refused():
    inv = inventory()
    facts = {h: converged(inv, h, db_nodes=NAMES[:2]) for h in HOSTS[:2]}
    facts["lab3"] = converged(inv, "lab3", db_nodes=["ejabberd@lab3", "ejabberd@other"])
    assert [(p.host, p.check) for p in make_plan(inv, facts, COOKIE).problems] == [("lab3", "membership")]


def test_health_of_a_converged_cluster_and_of_a_broken_one():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    assert assess(inv, facts).healthy
    facts["lab2"] = stopped(facts["lab2"])
    for h in ("lab1", "lab3"):
        facts[h].cluster_status["running_db_nodes"] = ["ejabberd@lab1", "ejabberd@lab3"]
    health = assess(inv, facts)
    assert not health.healthy and not health.partitioned
    assert "ejabberd@lab2: not running" in health.problems
    assert [n.member for n in health.nodes] == [True, True, True]


def test_health_sees_a_partition_and_differing_storage_types():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    facts["lab1"].cluster_status["running_db_nodes"] = ["ejabberd@lab1"]
    facts["lab3"].cluster_status["tables"]["passwd"]["ejabberd@lab3"] = "ram_copies"
    health = assess(inv, facts)
    assert health.partitioned
    assert any("storage types differ" in p for p in health.problems)


def test_fact_parsing_reads_what_the_probe_prints():
    out = "\n".join([
        "os_id=debian", "os_version=12", "hostname=lab1", "addresses=10.9.0.11 ",
        "ejabberd_version=23.01-1", "erlang_version=", "systemd=no",
        "file:/etc/ejabberd/ejabberd.yml=aGVsbG8K", "file:/etc/default/ejabberd=-",
        "cookie_sha256=" + "a" * 64, "plugin_sha256=", "mnesia_schema=yes",
        "resolve:lab2=10.9.0.12", "resolve:lab9=", "reach:lab2:4369=refused", "reach:lab2:4370=timeout",
        "ctl_status=0", 'cluster_status={"node": "ejabberd@lab1", "db_nodes": ["ejabberd@lab1"]}',
        "beam_running=yes", "end=1"])
    f = parse_facts("lab1", out)
    assert f.reachable and f.running and f.installed and f.mnesia_schema and f.beam_running
    assert f.erlang_version is None and f.plugin_sha256 is None and not f.systemd
    assert f.files == {EJABBERD_YML: "hello\n", EJABBERD_DEFAULT: None}
    assert f.resolves == {"lab2": "10.9.0.12", "lab9": None}
    assert f.reach == {("lab2", 4369): "refused", ("lab2", 4370): "timeout"}
    assert f.cluster_status["db_nodes"] == ["ejabberd@lab1"]
    assert parse_facts("lab1", "os_id=debian\n").error == "fact probe did not finish"


@pytest.mark.parametrize("line, statuses", [
    ('cluster_statuses={"statuses": {"ejabberd@lab1": {"node": "ejabberd@lab1"}, '
     '"ejabberd@lab2": {"error": "noconnection"}}}',
     {"ejabberd@lab1": {"node": "ejabberd@lab1"}, "ejabberd@lab2": {"error": "noconnection"}}),
    ("cluster_statuses=not json", None),
    ("cluster_statuses=[1, 2]", None),
])
def test_every_members_status_asked_from_one_node_is_parsed(line, statuses):
    f = parse_facts("lab1", f"os_id=debian\n{line}\nbeam_running=yes\nend=1\n")
    assert f.cluster_statuses == statuses
    assert f.cluster_status is None and f.beam_running


def _two_running_and(lab3: str):
    """lab1 and lab2 a running 2-node cluster; lab3 as named."""
    inv = inventory()
    facts = {h: converged(inv, h, db_nodes=NAMES[:2]) for h in ("lab1", "lab2")}
    if lab3 == "new":
        facts["lab3"] = fresh("lab3")
    elif lab3 == "installed, never started":
        facts["lab3"] = stopped(converged(inv, "lab3", db_nodes=NAMES[2:]))
        facts["lab3"].mnesia_schema = False
    elif lab3 == "running standalone":
        facts["lab3"] = converged(inv, "lab3", db_nodes=NAMES[2:])
    elif lab3 == "stopped with Mnesia files":
        facts["lab3"] = stopped(converged(inv, "lab3", db_nodes=NAMES[2:]))
    elif lab3 == "VM up, ejabberd not":
        facts["lab3"] = stopped(converged(inv, "lab3", db_nodes=NAMES[2:]))
        facts["lab3"].beam_running, facts["lab3"].mnesia_schema = True, False
    return inv, facts


def _scenario(name: str):
    if name == "three new hosts":
        inv = inventory()
        return inv, {h: fresh(h) for h in HOSTS}
    if name == "a running node's config changed too":
        inv, facts = _two_running_and("new")
        facts["lab1"].plugin_sha256 = "old"
        return inv, facts
    if name == "all stopped, with their data":
        inv = inventory()
        facts = {h: stopped(converged(inv, h)) for h in HOSTS}
        facts["lab3"] = fresh("lab3")
        return inv, facts
    return _two_running_and(name.removeprefix("lab3 "))


@pytest.mark.parametrize("scenario, at_boot", [
    ("three new hosts", {"lab2": True, "lab3": True}),
    ("lab3 new", {"lab3": True}),
    ("lab3 installed, never started", {"lab3": True}),
    # a node that runs or has data is joined the classic way: stop its ejabberd, join, start
    ("lab3 running standalone", {"lab3": False}),
    ("lab3 VM up, ejabberd not", {"lab3": False}),
    ("lab3 stopped with Mnesia files", {"lab3": False}),   # membership is known once it runs
    ("a running node's config changed too", {"lab3": False}),   # restarts come before joins
    ("all stopped, with their data", {"lab2": False, "lab3": False}),
])
def test_new_nodes_join_during_their_first_start_only_when_nothing_else_is_in_the_way(scenario, at_boot):
    inv, facts = _scenario(scenario)
    plan = make_plan(inv, facts, COOKIE)
    assert plan.problems == []
    assert {s.host: s.at_boot for s in plan.by_kind("join")} == at_boot
    for s in plan.by_kind("join"):
        assert s.summary.endswith("during its first start") == s.at_boot


def package_started(inv, host: str) -> HostFacts:
    """What `apt-get install ejabberd` leaves on a server: the package's node running as
    ejabberd@localhost with its own cookie and files, no plugin."""
    f = fresh(host)
    f.ejabberd_version, f.erlang_version = "23.01-1", "1:25.2.3"
    f.files[EJABBERD_DEFAULT] = "#ERLANG_NODE=ejabberd@localhost\n"
    f.cookie_sha256, f.mnesia_schema = "0" * 64, True
    f.ctl_status, f.beam_running, f.beam_node = 0, True, "ejabberd@localhost"
    return f


def test_a_node_the_package_started_as_localhost_is_reset_then_joined_at_boot():
    inv = inventory()
    facts = {h: converged(inv, h, db_nodes=NAMES[:2]) for h in HOSTS[:2]}
    facts["lab3"] = package_started(inv, "lab3")
    plan = make_plan(inv, facts, COOKIE)
    assert plan.problems == []
    assert kinds(plan) == [("reset", "lab3")] + [("write", "lab3")] * 7 + [("plugin", "lab3"), ("start", "lab3"),
                                                                            ("join", "lab3")]
    assert "ejabberd@localhost" in plan.steps[0].summary
    assert plan.by_kind("join")[0].at_boot, "a reset node holds nothing: it joins as it starts"


def test_a_node_running_under_another_configured_name_is_refused_not_reset():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    facts["lab3"].beam_node = "ejabberd@localhost"          # our files: not the package's own node
    plan = make_plan(inv, facts, COOKIE)
    assert [(p.host, p.check) for p in plan.problems] == [("lab3", "node name")]


UNIT_RUNNING = {"LoadState": "loaded", "ActiveState": "active", "SubState": "running", "Result": "success",
                "NRestarts": "0"}
UNIT_CASES = [
    # (case, unit fields changed, node answering?, expected problem or None)
    ("running cleanly", {}, True, None),
    ("deactivating while answering", {"ActiveState": "deactivating", "SubState": "stop-sigterm"}, True,
     "ejabberd@lab2: ejabberd.service is deactivating (stop-sigterm), not active (running) (journal: boom)"),
    ("restart loop", {"ActiveState": "activating", "SubState": "auto-restart", "NRestarts": "4"}, False,
     "ejabberd@lab2: ejabberd.service is restarting in a loop (4 restarts by systemd, "
     "now activating (auto-restart)) (journal: boom)"),
    ("died, restart pending", {"ActiveState": "activating", "SubState": "auto-restart", "NRestarts": "0"}, False,
     "ejabberd@lab2: ejabberd.service died and systemd is starting it again (0 restarts so far, "
     "now activating (auto-restart)) (journal: boom)"),
    ("still starting", {"ActiveState": "activating", "SubState": "start", "NRestarts": "3"}, False,
     "ejabberd@lab2: ejabberd.service is still starting (activating (start)): ejabberd waits for its tables "
     "(after a full outage: for the node that stopped last) or for its join (journal: boom)"),
    ("failed", {"ActiveState": "failed", "SubState": "failed", "Result": "timeout"}, False,
     "ejabberd@lab2: ejabberd.service failed (failed (failed) result timeout) (journal: boom)"),
    ("stopped cleanly", {"ActiveState": "inactive", "SubState": "dead"}, False, "ejabberd@lab2: not running"),
    ("VM outside the unit", {"ActiveState": "inactive", "SubState": "dead"}, True,
     "ejabberd@lab2: ejabberd.service is inactive (dead), not active (running) (journal: boom)"),
]


@pytest.mark.parametrize("fields, answering, expected", [c[1:] for c in UNIT_CASES], ids=[c[0] for c in UNIT_CASES])
def test_a_node_whose_unit_is_not_running_cleanly_is_never_healthy(fields, answering, expected):
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    for f in facts.values():
        f.unit = dict(UNIT_RUNNING)
    facts["lab2"].unit.update(fields)
    facts["lab2"].journal = [] if not fields else ["2026-12-01T10:00:00 lab2 sh[1]: boom"]
    if not answering:
        facts["lab2"] = stopped(facts["lab2"])
    health = assess(inv, facts)
    mine = [p for p in health.problems if p.startswith("ejabberd@lab2")]
    if expected is None:
        assert health.healthy, health.problems
    else:
        assert not health.healthy and mine[0] == expected.replace("(journal: boom)", "(journal: 2026-12-01T10:00:00 "
                                                                   "lab2 sh[1]: boom)"), mine


def test_fact_parsing_reads_the_unit_the_journal_and_the_vms_node_name():
    import base64
    journal = base64.b64encode(b"line one\nline two\n").decode()
    out = "\n".join([
        "os_id=debian", "systemd=yes",
        "unit=LoadState=loaded ActiveState=activating SubState=auto-restart Result=exit-code NRestarts=3 "
        "UnitFileState=enabled ", f"journal={journal}", "beam_node=ejabberd@localhost", "end=1"])
    f = parse_facts("lab1", out)
    assert f.systemd and f.restarts == 3 and not f.unit_running
    assert f.unit_state == "activating (auto-restart) result exit-code"
    assert f.unit["UnitFileState"] == "enabled"
    assert f.journal == ["line one", "line two"] and f.beam_node == "ejabberd@localhost"
    assert parse_facts("lab1", "systemd=yes\nunit=LoadState=not-found \nend=1").unit_state == "-"


def test_the_firewall_lets_in_every_node_of_the_inventory_and_changes_without_a_restart():
    inv = inventory()
    facts = {h: converged(inv, h) for h in HOSTS}
    rules = facts["lab1"].files[FIREWALL_RULES]
    assert "elements = { 10.9.0.11, 10.9.0.12, 10.9.0.13 }" in rules
    assert "reject with tcp reset" in rules and "tcp dport { 4369, 4370-4379 }" in rules
    # a member taken out (the firewall's members are the caller's): a write, no restart, no reload
    plan = make_plan(inv, facts, COOKIE, members=["10.9.0.11", "10.9.0.12"])
    assert kinds(plan) == [("write", h) for h in HOSTS]
    assert all("+\t\telements = { 10.9.0.11, 10.9.0.12 }" in s.diff for s in plan.steps), plan.steps[0].diff
    # a host without nftables gets it installed, nothing else
    facts["lab2"].nft = False
    assert kinds(make_plan(inv, facts, COOKIE)) == [("install", "lab2")]
