"""`fab upgrade`'s plan, without hosts: inventory + facts (installed versions, the upgrade's
facts, the cluster's problems) -> strategy, reason, order or problems. One case per row."""

from __future__ import annotations

from pathlib import Path

import pytest

from easycluster.facts import HostFacts
from easycluster.health import ClusterHealth, NodeHealth, assess, mixed_versions
from easycluster.inventory import load_inventory
from easycluster import releases
from easycluster.ops.upgrade import (FULL_STOP, OS_MOVE, ROLLING, UpgradeFacts, compare_records, format_upgrade_plan,
                                 parse_upgrade_facts, plan_upgrade)

OLD, NEW = "23.01-1", "24.12-3~bpo12+1"
HOSTS = ["lab1", "lab2", "lab3"]
MAM_OLD = ["us", "id", "timestamp", "peer", "bare_peer", "packet", "nick", "type"]
MAM_NEW = MAM_OLD + ["origin_id"]
PASSWD = ["us", "password"]


def inventory(tmp_path: Path, version: str):
    text = (f"cluster:\n  name: t\n  ejabberd_version: \"{version}\"\n  domains: [t.test]\n"
            f"  cookie: {{file: {tmp_path}/cookie}}\nnodes:\n" + "".join(f"  - host: {h}\n" for h in HOSTS))
    path = tmp_path / "inventory.yml"
    path.write_text(text)
    return load_inventory(str(path), None)


def tables(archive: list[str] | None = MAM_OLD, extra: dict | None = None) -> dict:
    found = {"passwd": {"record_name": "passwd", "attributes": PASSWD, "size": 3},
             "s2s": {"record_name": "s2s", "attributes": ["fromto", "pid"], "size": 0}}
    if archive:
        found["archive_msg"] = {"record_name": "archive_msg", "attributes": archive, "size": 6}
    found.update(extra or {})
    return found


def records(archive: list[str] = MAM_NEW) -> dict:
    return {"passwd": PASSWD, "archive_msg": archive, "config": ["title"]}   # s2s: defined in code


def answers(asked_tables: dict | None = None, target_records: dict | None = None) -> dict[str, UpgradeFacts]:
    """Every host's upgrade facts: installable, room for the copy; lab1 answers the running
    tables and the target's records (default: no archive, the target's records)."""
    ufacts = {h: UpgradeFacts(h, installable=True, changes=["ejabberd"], mnesia_bytes=2**20, free_bytes=2**30)
              for h in HOSTS}
    ufacts["lab1"].tables = tables(archive=None) if asked_tables is None else asked_tables
    ufacts["lab1"].records = records() if target_records is None else target_records
    return ufacts


# id, pinned, installed per host, the upgrade's facts per host (overrides), the asked node's tables
# and the target's records, the cluster's problems -> strategy, order, problem checks, words of the reason
CASES = [
    ("every node on the pinned version: no changes", NEW, {}, {}, tables(), records(), [],
     None, [], [], []),
    ("no record changes: rolling, the first node last", NEW, {}, {}, tables(archive=None), records(), [],
     ROLLING, ["lab2", "lab3", "lab1"], [], ["(1 table compared)"]),
    ("archive_msg gains origin_id: a full stop, the first node stops last", NEW, {}, {}, tables(), records(), [],
     FULL_STOP, ["lab3", "lab2", "lab1"], [], ["archive_msg (gains origin_id)", "#4374"]),
    ("a reordered record counts as a change", NEW, {}, {}, tables(archive=list(reversed(MAM_NEW))), records(), [],
     FULL_STOP, ["lab3", "lab2", "lab1"], [], ["its fields are reordered"]),
    ("half-way through a rolling upgrade: the rest, mixed versions allowed", NEW, {"lab2": NEW}, {},
     tables(archive=None), records(), ["mixed ejabberd versions: ..."],
     ROLLING, ["lab3", "lab1"], [], []),
    ("the version cannot be installed on one host", NEW, {},
     {"lab2": {"installable": False, "install_error": "E: Version '24.12-3~bpo12+1' for 'ejabberd' was not found"}},
     tables(), records(), [], None, [], ["lab2 package"], []),
    ("no room for the copy", NEW, {}, {"lab3": {"free_bytes": 10 * 2**20, "mnesia_bytes": 100 * 2**20}},
     tables(), records(), [], None, [], ["lab3 disk"], []),
    ("an unhealthy cluster is refused", NEW, {}, {}, tables(), records(), ["ejabberd@lab2: not running"],
     None, [], ["cluster health"], []),
    ("the target's headers could not be read", NEW, {}, {"lab1": {"records": None, "records_error": "no headers"}},
     tables(), None, [], None, [], ["lab1 records"], []),
    ("the running tables could not be read", NEW, {}, {"lab1": {"tables": None}}, None, records(), [],
     None, [], ["cluster tables"], []),
    ("a host did not answer", NEW, {}, {"lab3": {"error": "unreachable"}}, tables(), records(), [],
     None, [], ["lab3 facts"], []),
    ("back down, nothing changed between the versions: rolling", OLD, {h: NEW for h in HOSTS}, {},
     tables(archive=None), records(), [], ROLLING, ["lab2", "lab3", "lab1"], [], []),
    ("back down across a changed record: refused, --revert named", OLD, {h: NEW for h in HOSTS}, {},
     tables(archive=MAM_NEW), records(archive=MAM_OLD), [], None, [], ["lab1, lab2, lab3 downgrade"], []),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_plan_upgrade(case, tmp_path):
    (_, pinned, installed, overrides, asked_tables, target_records, cluster_problems,
     strategy, order, problem_checks, reason_words) = case
    inv = inventory(tmp_path, pinned)
    current = {h: installed.get(h, OLD if pinned == NEW else NEW) for h in HOSTS}
    if strategy is None and not problem_checks:
        current = {h: pinned for h in HOSTS}
    facts = {h: HostFacts(host=h, os_id="debian", os_version="12", ejabberd_version=current[h]) for h in HOSTS}
    ufacts = answers(asked_tables, target_records)
    for h, fields in overrides.items():
        for k, v in fields.items():
            setattr(ufacts[h], k, v)
    plan = plan_upgrade(inv, facts, ufacts, ClusterHealth([], list(cluster_problems)))
    assert [f"{p.host} {p.check}" for p in plan.problems] == problem_checks
    assert plan.strategy == strategy
    assert plan.order == order
    for word in reason_words:
        assert word in plan.reason
    text = format_upgrade_plan(plan, inv)
    if strategy:
        assert f"strategy: {strategy}: " in text and "first: a full Mnesia backup" in text
    elif not problem_checks:
        assert text == f"no changes: every node runs ejabberd {pinned}"


def test_records_not_in_the_targets_headers_are_listed_not_compared():
    changed, unknown, compared = compare_records(tables(), records())
    assert [c.table for c in changed] == ["archive_msg"] and unknown == ["s2s"] and compared == 2


def test_the_upgrade_facts_script_output_is_parsed():
    out = ("installable=yes\nchanges=erlang-p1-xmpp ejabberd \nmnesia_bytes=1234\nfree_bytes=99999\n"
           'tables:{"tables": {"passwd": {"record_name": "passwd", "attributes": ["us", "password"]}}}\n'
           'records:{"ok": true, "headers": 30, "records": {"passwd": ["us", "password"]}}\n'
           "copy:20261202T005021Z=23.01-1\nend=1\n")
    uf = parse_upgrade_facts("lab1", out)
    assert uf.installable and uf.changes == ["erlang-p1-xmpp", "ejabberd"] and not uf.error
    assert (uf.mnesia_bytes, uf.free_bytes) == (1234, 99999)
    assert uf.tables["passwd"]["attributes"] == ["us", "password"] and uf.records == {"passwd": ["us", "password"]}
    assert uf.copies == {"20261202T005021Z": "23.01-1"}
    failed = parse_upgrade_facts("lab1", 'installable=no\ninstall_error=E: no such version\n'
                                         'records:{"ok": false, "reason": "no headers (*.hrl) in /x"}\n')
    assert not failed.installable and failed.install_error == "E: no such version"
    assert failed.records is None and "no headers" in failed.records_error
    assert failed.error == "the host's answer ended early"


def test_mixed_versions_are_a_problem_of_the_cluster(tmp_path):
    inv = inventory(tmp_path, NEW)
    status = {"node": "", "db_nodes": [f"ejabberd@{h}" for h in HOSTS], "master": True, "missing_tables": [],
              "running_db_nodes": [f"ejabberd@{h}" for h in HOSTS], "tables": {}}
    facts = {h: HostFacts(host=h, os_id="debian", os_version="12", ejabberd_version=NEW if h == "lab1" else OLD, ctl_status=0,
                          cluster_status=dict(status, node=f"ejabberd@{h}"), beam_running=True) for h in HOSTS}
    health = assess(inv, facts)
    assert mixed_versions(health.nodes) == {NEW: ["lab1"], OLD: ["lab2", "lab3"]}
    assert [p for p in health.problems if p.startswith("mixed ejabberd versions")] == [
        f"mixed ejabberd versions: {NEW} on lab1; {OLD} on lab2, lab3 (an upgrade under way or stopped "
        "half-way: `fab upgrade` brings every node to the pinned version; ejabberd's maintainers advise "
        "against running mixed versions)"]
    assert health.as_dict()["mixed_versions"] == {NEW: ["lab1"], OLD: ["lab2", "lab3"]}
    same = {h: HostFacts(host=h, os_id="debian", os_version="12", ejabberd_version=OLD) for h in HOSTS}
    assert mixed_versions([NodeHealth(h, h, True, False, False, False, [], [], [], None, None, OLD, None, None)
                           for h in same]) == {}


def test_the_plan_shows_each_hosts_packages_and_the_files_that_change_with_the_version(tmp_path):
    inv = inventory(tmp_path, NEW)
    facts = {h: HostFacts(host=h, os_id="debian", os_version="12", ejabberd_version=OLD) for h in HOSTS}
    ufacts = {h: UpgradeFacts(h, installable=True, changes=["erlang-p1-xmpp", "ejabberd"], free_bytes=2**30)
              for h in HOSTS}
    ufacts["lab1"].tables, ufacts["lab1"].records = tables(archive=None), records()
    plan = plan_upgrade(inv, facts, ufacts, ClusterHealth([], []))
    plan.files = {"lab2": [("/etc/systemd/system/ejabberd.service.d/easycluster.conf",
                            "--- a\n+++ b\n-WatchdogSec=0\n")]}
    text = format_upgrade_plan(plan, inv).splitlines()
    assert f"[lab2] ejabberd {OLD} -> {NEW} (2 packages: erlang-p1-xmpp ejabberd)" in text
    i = text.index("[lab2]   /etc/systemd/system/ejabberd.service.d/easycluster.conf: for " + NEW)
    assert text[i + 3] == "[lab2]     -WatchdogSec=0"
    assert f"[lab1]   the plugin: rebuilt against {NEW}'s headers" in text


# The OS move: Debian 12 -> 13 under `fab upgrade` with Debian 13's build pinned.
# id, pinned, per host (Debian release, installed version, a move's marker), the cluster's
# problems -> strategy, order, problem checks, words of the reason
BPO12, DEB13, BPO13 = "24.12-3~bpo12+1", "24.12-3+deb13u2", "26.07-1~bpo13+1"
MARK = {"from": "bookworm", "to": "trixie", "since": "20261207T000000Z"}   # as os_move.sh writes it
MOVES = [
    ("24.12 on Debian 12 to Debian 13's 24.12: node by node, the first node last", DEB13,
     {h: ("12", BPO12, None) for h in HOSTS}, [],
     OS_MOVE, ["lab2", "lab3", "lab1"], [],
     ["Debian 12 (bookworm) -> Debian 13 (trixie)", "ejabberd 24.12 on both sides", "Mnesia protocol 8.6",
      "the cluster serves throughout"]),
    ("23.01 to Debian 13's 24.12 at once: refused, 24.12 on Debian 12 first", DEB13,
     {h: ("12", OLD, None) for h in HOSTS}, [],
     None, [], ["lab1 os", "lab2 os", "lab3 os"], []),
    ("24.12 on Debian 12 to 26.07 of Debian 13's backports at once: refused, the OS first", BPO13,
     {h: ("12", BPO12, None) for h in HOSTS}, [],
     None, [], ["lab1 os", "lab2 os", "lab3 os"], []),
    ("a Debian 12 build pinned on Debian 13 hosts: refused, no downgrade", BPO12,
     {h: ("13", DEB13, None) for h in HOSTS}, [],
     None, [], ["lab1 os", "lab2 os", "lab3 os"], []),
    ("half-moved, lab3's move cut off with its node down: lab3 first, then lab1", DEB13,
     {"lab1": ("12", BPO12, None), "lab2": ("13", DEB13, None), "lab3": ("13", DEB13, MARK)},
     ["ejabberd@lab3: not running", "ejabberd@lab1: does not see ejabberd@lab3 running",
      "mixed operating system releases: ..."],
     OS_MOVE, ["lab3", "lab1"], [], ["Debian 12 (bookworm) -> Debian 13 (trixie)"]),
    ("half-moved, but another node is down: refused", DEB13,
     {"lab1": ("12", BPO12, None), "lab2": ("13", DEB13, None), "lab3": ("13", DEB13, MARK)},
     ["ejabberd@lab3: not running", "ejabberd@lab1: not running"],
     None, [], ["cluster health"], []),
    ("cut off on Debian 12 still (before its sources moved): resumed first", DEB13,
     {"lab1": ("12", BPO12, None), "lab2": ("12", BPO12, MARK), "lab3": ("12", BPO12, None)},
     ["ejabberd@lab2: not running"],
     OS_MOVE, ["lab2", "lab3", "lab1"], [], []),
    ("every host moved: no changes", DEB13, {h: ("13", DEB13, None) for h in HOSTS}, [],
     None, [], [], []),
]


@pytest.mark.parametrize("case", MOVES, ids=[c[0] for c in MOVES])
def test_plan_an_os_move(case, tmp_path):
    _, pinned, hosts, cluster_problems, strategy, order, problem_checks, reason_words = case
    inv = inventory(tmp_path, pinned)
    facts = {h: HostFacts(host=h, os_id="debian", os_version=v, ejabberd_version=ver, os_move=mark)
             for h, (v, ver, mark) in hosts.items()}
    ufacts = answers()
    plan = plan_upgrade(inv, facts, ufacts, ClusterHealth([], list(cluster_problems)))
    assert [f"{p.host} {p.check}" for p in plan.problems] == problem_checks
    assert plan.strategy == strategy
    assert plan.order == order
    for words in reason_words:
        assert words in plan.reason
    if strategy == OS_MOVE:
        text = format_upgrade_plan(plan, inv)
        assert "Debian 12 -> Debian 13 (trixie)" in text and "reboot" in text


def test_a_move_between_releases_whose_mnesia_protocols_differ_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(releases.MNESIA_PROTOCOL, "13", "9.0")
    inv = inventory(tmp_path, DEB13)
    facts = {h: HostFacts(host=h, os_id="debian", os_version="12", ejabberd_version=BPO12) for h in HOSTS}
    ufacts = answers()
    plan = plan_upgrade(inv, facts, ufacts, ClusterHealth([], []))
    assert [f"{p.host} {p.check}" for p in plan.problems] == ["lab1 os", "lab2 os", "lab3 os"]
    assert "Mnesia's protocol differs" in plan.problems[0].detail


def test_the_refusals_say_what_comes_first(tmp_path):
    """One step at a time, and the step named."""
    for pinned, installed, words in [(DEB13, OLD, "first ejabberd 24.12 on Debian 12 (bookworm) (its backports"),
                                     (BPO13, BPO12, "first the move with Debian 13's build of ejabberd 24.12")]:
        inv = inventory(tmp_path, pinned)
        facts = {h: HostFacts(host=h, os_id="debian", os_version="12", ejabberd_version=installed) for h in HOSTS}
        ufacts = answers()
        plan = plan_upgrade(inv, facts, ufacts, ClusterHealth([], []))
        assert words in plan.problems[0].fix


def test_a_move_cut_off_inside_dpkg_is_resumed_whatever_its_packages_say(tmp_path):
    """A power cut in the middle of dpkg: ejabberd not cleanly installed (no version), apt's
    simulation failing. The move is resumed (os_move.sh completes it), not refused."""
    inv = inventory(tmp_path, DEB13)
    facts = {"lab1": HostFacts(host="lab1", os_id="debian", os_version="12", ejabberd_version=BPO12),
             "lab2": HostFacts(host="lab2", os_id="debian", os_version="13", ejabberd_version=DEB13),
             "lab3": HostFacts(host="lab3", os_id="debian", os_version="13", ejabberd_version=None, os_move=MARK)}
    ufacts = answers()
    ufacts["lab3"].installable, ufacts["lab3"].install_error = False, "E: Unmet dependencies"
    plan = plan_upgrade(inv, facts, ufacts, ClusterHealth([], ["ejabberd@lab3: not running"]))
    assert plan.problems == [] and plan.strategy == OS_MOVE and plan.order == ["lab3", "lab1"]
    assert plan.moves["lab3"] == ("12", "13")     # from where its move started (its marker)
    assert "[lab3] Debian 12 -> Debian 13 (trixie)" in format_upgrade_plan(plan, inv)


# passwd keeps its fields (us, password) at 25.03, but its key gains the password's type: the
# new version transforms it at start, as a changed record (refusals.KEY_CHANGES).
@pytest.mark.parametrize("running, pinned, strategy, problems, words", [
    (DEB13, BPO13, FULL_STOP, [], "passwd (its key gains the password's type: {User, Server, Type}, at ejabberd 25.03)"),
    (DEB13, "25.01-1~bpo13+1", ROLLING, [], "no table's record differs"),
    (BPO13, DEB13, None, ["lab1, lab2, lab3 downgrade"], ""),
    ("25.04-1", BPO13, ROLLING, [], "no table's record differs"),
])
def test_the_passwd_key_change_at_25_03_is_a_full_stop_either_way(running, pinned, strategy, problems, words,
                                                                   tmp_path):
    inv = inventory(tmp_path, pinned)
    facts = {h: HostFacts(host=h, os_id="debian", os_version="13", ejabberd_version=running) for h in HOSTS}
    ufacts = answers()
    plan = plan_upgrade(inv, facts, ufacts, ClusterHealth([], []))
    assert [f"{p.host} {p.check}" for p in plan.problems] == problems
    assert plan.strategy == strategy
    assert words in plan.reason
