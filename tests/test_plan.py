"""Preflight and plan: pure functions of inventory + facts, no hosts.

The planner's cases are data: one YAML file per case in tests/cases/plan/ (an inventory,
each host's facts, the steps or preflight problems expected), all run by
test_plan_case below, whose ids are the file names; tests/cases/plan/README.md says how
to write one. What does not fit that form (health, fact parsing, rendered files) stays
here as Python.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from casefacts import (COOKIE, DB_PASSWORD, INVENTORY_PATH, PLUGIN_SHA, address, converged,
                       host_facts, stopped)
from easycluster import plan as planmod
from easycluster.errors import PreflightFailed
from easycluster.facts import DbHostFacts, EtcdMember, HostFacts, ReplicaFacts, SqlFacts, parse_facts
from easycluster.health import assess
from easycluster.inventory import Inventory, parse_inventory
from easycluster.paths import EJABBERD_DEFAULT, EJABBERD_YML, FIREWALL_RULES
from easycluster.plan import JOIN, DbView, format_plan, make_plan, settled_by_reload
from easycluster.render import Member, host_files, replica_files
from easycluster.secrets import Secret

CASES = Path(__file__).parent / "cases" / "plan"
DB_ADDRESS = "10.9.0.50"       # where a case's database host is
REPLICATION = Secret("replication-pw-of-the-cases")   # a replicated database's replication password


@pytest.fixture(autouse=True)
def fixed_plugin(monkeypatch):
    monkeypatch.setattr(planmod, "plugin_sha256", lambda: PLUGIN_SHA)


# --------------------------------------------------------------------------- the case tables

CASE_KEYS = {"inventory", "deployed", "facts", "firewall_members", "steps", "diffs", "problems", "error", "seed",
             "printed", "database"}


def database_view(inv: Inventory, given: dict | None) -> DbView | None:
    """A case's `database:` -- `host:` the database host's facts from a `state` (new: a Debian
    server with nothing installed; ready: provisioned for `inv`'s nodes) then DbHostFacts
    fields; `sql:` per node (or '*') the database as that node sees it, SqlFacts fields (by
    default: logged in, ejabberd's schema with this cluster's mark; `state: unreachable` for
    a database host not provisioned yet)."""
    d = inv.cluster.database
    if d is None:
        assert not given, "database: facts for an inventory without cluster.database"
        return None
    given = given or {}
    host = None
    if d.managed:
        spec = dict(given.get("host", {"state": "ready"}))
        state = spec.pop("state", "ready")
        host = DbHostFacts(host=d.managed_host, os_id="debian", os_version="12", systemd=True, addresses=[DB_ADDRESS],
                           resolve=DB_ADDRESS)
        if state == "ready":
            conf, hba = host_files(inv, [(n, address(inv, n.host)) for n in inv.nodes], DB_ADDRESS)
            host.postgresql, host.cluster, host.online, host.conf, host.hba = "15+248", "15/main", True, conf, hba
            host.role, host.owner, host.password_sha256 = True, d.user, DB_PASSWORD.sha256()
        else:
            assert state == "new", f"database host: state new or ready, not {state!r}"
        for key, value in spec.items():
            setattr(host, key, value)
    replicas = {}
    members = [Member(h, f"10.9.0.{61 + i}") for i, h in enumerate(d.replicas)]
    # the members the running ones were deployed with (default: the inventory's), and the quorum
    # store's members (default: those): names, "never-started:HOST" for one added, not started
    deployed = [m for m in members if m.host in given.get("replicas_deployed", d.replicas)]

    def etcd_member(i: int, name: str) -> EtcdMember:
        started = not name.startswith("never-started:")
        host = name.removeprefix("never-started:")
        known = next((m for m in members if m.host == host), Member(host, "10.9.0.99"))
        return EtcdMember(1000 + i, host if started else "", (f"http://{known.address}:2380",))
    quorum = [etcd_member(i, n) for i, n in enumerate(given.get("quorum", [m.host for m in deployed]))]
    for i, member in enumerate(members):
        spec = dict(given.get("replicas", {}).get(member.host, given.get("replicas", {}).get("*", {})))
        state = spec.pop("state", "ready")
        rf = ReplicaFacts(member.host, os_id="debian", os_version="13", systemd=True, addresses=[member.address],
                          resolve=member.address)
        if state == "ready":
            etcd, patroni, *firewall = replica_files(inv, member, deployed,
                                                     [(n, address(inv, n.host)) for n in inv.nodes], REPLICATION, "17")
            rf.packages = {p: "1" for p in ("postgresql", "patroni", "etcd-server", "python3-etcd", "nftables")}
            rf.files = {f.path: f.content for f in firewall}
            rf.etcd_conf, rf.patroni_sha256, rf.etcd_active, rf.patroni_active = \
                etcd.content, patroni.sha256(), True, True
            rf.etcd_data, rf.etcd_members = True, quorum
            if i == 0:
                rf.primary, rf.role, rf.owner, rf.password_sha256 = True, True, d.user, DB_PASSWORD.sha256()
        else:
            assert state == "new", f"database member: state new or ready, not {state!r}"
        for key, value in spec.items():
            setattr(rf, key, value)
        replicas[member.host] = rf
    sql = {}
    for node in inv.nodes:
        spec = dict(given.get("sql", {}).get(node.host, given.get("sql", {}).get("*", {})))
        state = spec.pop("state", "ready")
        if state == "unreachable":
            f = SqlFacts(node.host, error=f"cannot reach {d.server}:{d.port} from {node.host} (Connect failed)")
        else:
            f = SqlFacts(node.host, None, "15.18", 8_000_000, inv.cluster.name, True, 0)
        for key, value in spec.items():
            setattr(f, key, value)
        sql[node.host] = f
    return DbView(host, sql, DB_PASSWORD, replicas=replicas, replication=REPLICATION if d.replicated else None)


def load_case(path: Path) -> tuple[Inventory, dict[str, HostFacts], dict]:
    case = yaml.safe_load(path.read_text())
    unknown = set(case) - CASE_KEYS
    assert not unknown, f"{path.name}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(CASE_KEYS))})"
    inv = parse_inventory(yaml.safe_dump(case["inventory"]), INVENTORY_PATH)
    deployed = parse_inventory(yaml.safe_dump(case["deployed"]), INVENTORY_PATH) if "deployed" in case else inv
    given = case["facts"]
    missing = [n.host for n in inv.nodes if n.host not in given and "*" not in given]
    assert not missing, f"{path.name}: no facts for {', '.join(missing)}"
    facts = {n.host: host_facts(inv, deployed, n.host, given.get(n.host, given.get("*"))) for n in inv.nodes}
    case["_db"] = database_view(inv, case.get("database"))
    return inv, facts, case


def _one_line(item) -> str:
    """`- lab1 write: write /etc/x` is a one-key mapping in YAML; a line without `: ` a string."""
    if isinstance(item, dict):
        assert len(item) == 1, item
        (key, value), = item.items()
        return f"{key}: {value}"
    return str(item)


def step_line(s: planmod.Step) -> str:
    return f"{s.host} {s.kind}: {s.summary}"


def changed_lines(diff: str) -> list[str]:
    return [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


@pytest.mark.parametrize("path", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_plan_case(path):
    inv, facts, case = load_case(path)
    plan = make_plan(inv, facts, COOKIE, members=case.get("firewall_members"), db=case["_db"])

    assert [f"{p.host} {p.check}" for p in plan.problems] == [str(p) for p in case.get("problems", [])]
    assert [step_line(s) for s in plan.steps] == [_one_line(s) for s in case.get("steps", [])]

    # what the operator reads: the printed plan, or the preflight failure
    printed = format_plan(plan, inv)
    assert COOKIE.reveal() not in printed, "the cookie never appears in a plan"
    assert DB_PASSWORD.reveal() not in printed, "the database password never appears in a plan"
    for text in case.get("printed", []):
        assert text in printed, printed
    errors = case.get("error", [])
    assert not errors or plan.problems, "error: expected, but preflight passed"
    message = str(PreflightFailed(plan.problems)) if plan.problems else ""
    for text in [errors] if isinstance(errors, str) else errors:
        assert text in message, message
    if "seed" in case:
        assert plan.seed.host == case["seed"]

    writes = {(s.host, s.file.path): s.diff for s in plan.steps if s.file is not None}
    for key, lines in case.get("diffs", {}).items():
        host, path_ = key.split(" ", 1)
        hosts = [n.host for n in inv.nodes if (n.host, path_) in writes] if host == "*" else [host]
        assert hosts and all((h, path_) in writes for h in hosts), f"no write of {path_} on {host}"
        for h in hosts:
            assert changed_lines(writes[(h, path_)]) == lines, writes[(h, path_)]

    for s in plan.by_kind(JOIN):   # a join names its seed; one at boot says so
        assert f" to {s.seed} as master" in s.summary
        assert s.summary.endswith("during its first start") == s.at_boot, s


def test_the_case_folder_has_cases():
    assert len(list(CASES.glob("*.yaml"))) >= 30
    assert not [p.name for p in CASES.iterdir() if p.suffix not in (".yaml", ".md")], "cases end in .yaml"


# --------------------------------------------------------------------------- not plans: health, facts, files

HOSTS = ["lab1", "lab2", "lab3"]   # (test_heal.py builds its facts with these helpers too)


def inventory() -> Inventory:
    return parse_inventory(yaml.safe_dump({
        "cluster": {"name": "t", "ejabberd_version": "23.01-1", "domains": ["t.test"],
                    "cookie": {"file": "/nonexistent/cookie"}},
        "nodes": [{"host": h} for h in HOSTS]}), INVENTORY_PATH)


def test_health_of_a_converged_cluster_and_of_a_broken_one():
    inv = inventory()
    facts = {n.host: converged(inv, n.host) for n in inv.nodes}
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
    facts = {n.host: converged(inv, n.host) for n in inv.nodes}
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


def test_the_firewall_of_a_converged_host_lets_in_every_node_of_the_inventory():
    """(What a plan does when the members change: cases firewall-*.yaml.)"""
    inv = inventory()
    rules = converged(inv, "lab1").files[FIREWALL_RULES]
    assert "elements = { 10.9.0.11, 10.9.0.12, 10.9.0.13 }" in rules
    assert "reject with tcp reset" in rules and "tcp dport { 4369, 4370-4379 } ip saddr @members accept" in rules


def test_health_of_satellites():
    """A satellite holds no disc copy and is no replica; it needs a running master."""
    inv = parse_inventory(yaml.safe_dump({
        "cluster": {"name": "t", "ejabberd_version": "23.01-1", "domains": ["t.test"],
                    "cookie": {"file": "/nonexistent/cookie"}},
        "nodes": [{"host": "lab1"}, {"host": "lab2"}, {"host": "lab3", "role": "satellite"}]}), INVENTORY_PATH)
    facts = {n.host: converged(inv, n.host) for n in inv.nodes}
    health = assess(inv, facts)
    assert health.healthy, health.problems
    assert [(n.role, n.in_role, n.master) for n in health.nodes] == [
        ("master", True, True), ("master", True, True), ("satellite", True, False)]
    assert health.as_dict()["nodes"][2]["role"] == "satellite"
    # a satellite that got a disc copy back is not one any more
    for f in facts.values():
        f.cluster_status["tables"]["passwd"]["ejabberd@lab3"] = "disc_only_copies"
    health = assess(inv, facts)
    assert ("ejabberd@lab3: a satellite holding disc copies (passwd): `fab deploy` makes it a satellite again"
            in health.problems) and not health.nodes[2].in_role
    # masters down: the satellite cannot serve stored data
    facts = {n.host: converged(inv, n.host) for n in inv.nodes}
    for h in ("lab1", "lab2"):
        facts[h] = stopped(facts[h])
    facts["lab3"].cluster_status["running_db_nodes"] = ["ejabberd@lab3"]
    problems = assess(inv, facts).problems
    assert "no master runs: the satellites hold no data of their own" in problems
    assert ("ejabberd@lab3: a satellite with no master running: it cannot serve stored data (logins fail) "
            "until one is back") in problems


_DEFAULT_OLD = "# a comment\nERLANG_NODE=ejabberd@lab1\nERL_OPTIONS=\"-kernel net_ticktime 60 -pa /x\"\n"


@pytest.mark.parametrize("path, old, new, settled", [
    (EJABBERD_DEFAULT, _DEFAULT_OLD, _DEFAULT_OLD.replace("net_ticktime 60", "net_ticktime 15"), True),
    (EJABBERD_DEFAULT, _DEFAULT_OLD, _DEFAULT_OLD.replace("a comment", "another comment (15 s)"), True),
    (EJABBERD_DEFAULT, _DEFAULT_OLD, _DEFAULT_OLD.replace("60 -pa /x", "15 -pa /y"), False),   # and the code path
    (EJABBERD_DEFAULT, _DEFAULT_OLD, _DEFAULT_OLD.replace("ejabberd@lab1", "ejabberd@lab9"), False),
    (EJABBERD_DEFAULT, _DEFAULT_OLD.replace("-kernel net_ticktime 60 ", ""), _DEFAULT_OLD, False),   # newly set
    (EJABBERD_DEFAULT, None, _DEFAULT_OLD, False),                                            # a new file
    (EJABBERD_YML, "net_ticktime: 60\n", "net_ticktime: 15\n", False),                        # not this rule's file
])
def test_only_net_ticktime_or_comments_in_etc_default_are_settled_by_a_reload(path, old, new, settled):
    assert settled_by_reload(path, old, new) is settled


def test_a_net_ticktime_change_leaves_no_restart_pending():
    """Its /etc/default/ejabberd is written as a file that needs no restart, so configure.sh
    leaves no restart-pending marker (which the next deploy would act on)."""
    inv, facts, case = load_case(CASES / "net-ticktime-change-is-reloaded-not-restarted.yaml")
    plan = make_plan(inv, facts, COOKIE)
    written = {s.file.path: s.file.restart for s in plan.steps if s.host == "lab1" and s.file is not None}
    assert written == {EJABBERD_DEFAULT: False, EJABBERD_YML: False}
    # another change of the same file still restarts the node
    inv2, facts2, _ = load_case(CASES / "distribution-change-restarts-each-node.yaml")
    assert [s.file.restart for s in make_plan(inv2, facts2, COOKIE).steps
            if s.host == "lab1" and s.file is not None and s.file.path == EJABBERD_DEFAULT] == [True]
