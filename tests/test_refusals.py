"""What each command refuses: easycluster/refusals.py, decided from facts alone, no hosts.

The cases are data: one YAML file per case in tests/cases/refusals/, named
`<command>-<what>.yaml` (an inventory, each host's facts, the command's arguments, and either
the refusal the operator reads or what the command goes on with), all run by
test_refusal_case below, whose ids are the file names; tests/cases/refusals/README.md says
how to write one. A host's facts come from the same shorthand as the planner's cases
(tests/casefacts.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from casefacts import INVENTORY_PATH, host_facts
from easycluster import refusals
from easycluster.paths import MNESIA_BACKUP_DIR
from easycluster.sql import label as sql_label
from easycluster.errors import EasyClusterError, MembershipError, PreflightFailed
from easycluster.facts import EtcdMember, HostFacts, ReplicaFacts
from easycluster.health import ClusterHealth, assess, departed, without_departed
from easycluster.inventory import Inventory, parse_inventory
from easycluster.ops.upgrade import UpgradeFacts, plan_upgrade

CASES = Path(__file__).parent / "cases" / "refusals"
BACKUP = f"{MNESIA_BACKUP_DIR}/t-ejabberd@lab1.20261201T000000Z.backup"   # restore's --backup

# Every case's inventory, unless the case changes it (`inventory:` is merged into it).
INVENTORY = {"cluster": {"name": "t", "ejabberd_version": "23.01-1", "domains": ["t.test"],
                         "cookie": {"file": "/nonexistent/cookie"}},
             "nodes": [{"host": "lab1"}, {"host": "lab2"}, {"host": "lab3"}]}

# The upgrade's facts of every host unless the case changes them (`upgrade_facts:`): the pinned
# version installs, room for the copy; the first node of the inventory is asked for the records.
UPGRADE_FACTS = {"installable": True, "changes": ["ejabberd"], "mnesia_bytes": 2**20, "free_bytes": 2**30}
RECORDS = {"tables": {"passwd": {"record_name": "passwd", "attributes": ["us", "password"], "size": 3}},
           "records": {"passwd": ["us", "password"]}}

# The commands, and the error each raises when it refuses (upgrade: a preflight table).
COMMANDS = {
    "remove-node": MembershipError,
    "forget-node": MembershipError,
    "heal": EasyClusterError,
    "restore": EasyClusterError,
    "rolling-restart": EasyClusterError,
    "start-cluster": EasyClusterError,
    "upgrade": PreflightFailed,
    "remove-database-host": EasyClusterError,
    "force-database-quorum": EasyClusterError,
}
CASE_KEYS = {"inventory", "facts", "host", "winner", "backup_on", "without", "upgrade_facts", "refused", "problems",
             "proceeds", "database"}
# A replicated database's members, unless the case says otherwise (`database:`): Patroni's list
# (member: "role state"), the quorum store's members, the members down (unreachable over SSH),
# and those whose etcd is stopped.
REPLICATED = {"patroni": {"db1": "leader running", "db2": "sync standby streaming", "db3": "replica streaming"},
              "quorum": None, "down": [], "etcd_down": []}   # and etcd_majority: true/false (default: counted)


# --------------------------------------------------------------------------- reading a case

def merged(base, given):
    """`given` over `base`: mappings merged key by key, any other value replacing."""
    if isinstance(base, dict) and isinstance(given, dict):
        out = dict(base)
        for key, value in given.items():
            out[key] = merged(base.get(key), value) if key in base else value
        return out
    return copy.deepcopy(given)


def command_of(path: Path) -> str:
    found = [c for c in COMMANDS if path.stem.startswith(c + "-")]
    assert found, f"{path.name}: the file name starts with the command ({', '.join(COMMANDS)}), then a dash"
    return max(found, key=len)


def load_case(path: Path) -> tuple[Inventory, dict[str, HostFacts], dict]:
    case = yaml.safe_load(path.read_text())
    unknown = set(case) - CASE_KEYS
    assert not unknown, (f"{path.name}: unknown keys {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(CASE_KEYS))})")
    assert ("refused" in case or "problems" in case) != ("proceeds" in case), \
        f"{path.name}: a case either refuses (refused:, problems:) or proceeds (proceeds:)"
    inv = parse_inventory(yaml.safe_dump(merged(INVENTORY, case.get("inventory", {}))), INVENTORY_PATH)
    given = case["facts"]
    missing = [n.host for n in inv.nodes if n.host not in given and "*" not in given]
    assert not missing, f"{path.name}: no facts for {', '.join(missing)}"
    facts = {n.host: host_facts(inv, inv, n.host, given.get(n.host, given.get("*"))) for n in inv.nodes}
    return inv, facts, case


def observed(inv: Inventory, facts: dict[str, HostFacts]) -> ClusterHealth:
    """The health a command reads (status.observe): of the nodes not taken out on purpose."""
    gone = departed(facts)
    health = assess(without_departed(inv, facts, lambda _line: None), facts)
    health.departed = {n.name: gone[n.name] for n in inv.nodes if n.name in gone}
    return health


def replica_facts(inv: Inventory, given: dict | None) -> dict[str, ReplicaFacts]:
    """Each database host's facts as replica_probe.sh reads them, from the case's shorthand."""
    spec = {**REPLICATED, **(given or {})}
    hosts = inv.cluster.database.replicas
    listed = [{"Member": m, "Role": rs.rsplit(" ", 1)[0].title(), "State": rs.rsplit(" ", 1)[1].title()}
              for m, rs in spec["patroni"].items()]
    quorum = [EtcdMember(100 + i, m, (f"http://10.9.0.{61 + i}:2380",))
              for i, m in enumerate(spec["quorum"] if spec["quorum"] is not None else hosts)]
    # etcd lists its members (a linearizable read) only with a majority of them up (or as told:
    # the hosts may be out of the operator's reach and still up among themselves)
    up = [m for m in quorum if m.name in hosts and m.name not in spec["down"] + spec["etcd_down"]]
    majority = spec.get("etcd_majority", len(up) * 2 > len(quorum))
    out = {}
    for h in hosts:
        if h in spec["down"]:
            out[h] = ReplicaFacts(h, error="unreachable over SSH")
            continue
        etcd = h not in spec["etcd_down"]
        out[h] = ReplicaFacts(h, members=listed, etcd_active=etcd, patroni_active=h in spec["patroni"],
                              etcd_data=True, etcd_members=quorum if etcd and majority else [])
    return out


def upgrade_facts(inv: Inventory, given: dict | None) -> dict[str, UpgradeFacts]:
    given = given or {}
    ufacts = {}
    for i, node in enumerate(inv.nodes):
        fields = merged(UPGRADE_FACTS, RECORDS) if i == 0 else dict(UPGRADE_FACTS)
        fields = merged(fields, given.get("*", {}))
        fields = merged(fields, given.get(node.host, {}))
        ufacts[node.host] = UpgradeFacts(node.host, **fields)
    return ufacts


# --------------------------------------------------------------------------- each command, as it decides

def hosts(nodes) -> list[str]:
    return [n.host for n in nodes]


def decide(command: str, inv: Inventory, facts: dict[str, HostFacts], case: dict) -> dict:
    """Run the command's refusals on the case's facts, in the order the command does; what it
    goes on with, as the case's `proceeds:` writes it (or the refusal it raises)."""
    if command == "remove-node":
        return {"survivors": hosts(refusals.remove_node(inv, facts, inv.node(case["host"])))}
    if command == "forget-node":
        return {"survivors": hosts(refusals.forget_node(inv, facts, inv.node(case["host"])))}
    if command == "heal":
        sides = refusals.heal(inv, observed(inv, facts), case.get("winner"))
        if sides is None:
            return {"partitioned": False}
        return {"partitioned": True, "winner": sides.winner.host, "winning": sides.winning,
                "losers": hosts(sides.losers)}
    if command == "restore":
        running = refusals.restore(observed(inv, facts))
        holders = [h for h in running if h in case.get("backup_on", [inv.nodes[0].host])]
        return {"nodes": running, "from": refusals.restore_from(BACKUP, holders)}
    if command == "rolling-restart":
        return {"order": hosts(refusals.rolling_restart(inv, observed(inv, facts)).nodes)}
    if command == "start-cluster":
        lost = [inv.node(h) for h in case.get("without", [])]
        effective = without_departed(inv, facts, lambda _line: None)
        survivors = refusals.start_cluster(effective, facts, lost)
        decided = {"survivors": hosts(survivors)}
        if lost:
            decided["loads_first"] = refusals.force_load_host(survivors, facts).host
        return decided
    if command == "upgrade":
        effective = without_departed(inv, facts, lambda _line: None)
        ufacts = upgrade_facts(effective, case.get("upgrade_facts"))
        health = assess(effective, facts)
        problems = refusals.upgrade(effective, facts, ufacts, health)
        plan = plan_upgrade(effective, facts, ufacts, health)
        assert plan.problems == problems, "plan_upgrade refuses with refusals.upgrade's problems"
        if problems:
            raise PreflightFailed(problems)
        decided = {"strategy": plan.strategy, "order": plan.order}
        if plan.sql_steps:
            decided["schema"] = [sql_label(at) for at in plan.sql_steps]
        return decided
    if command == "remove-database-host":
        gone = refusals.remove_database_host(inv, replica_facts(inv, case.get("database")), case["host"])
        return {"member": gone.member.name if gone.member else None, "reachable": gone.reachable,
                "switchover_to": gone.switchover_to, "survivors": gone.survivors}
    if command == "force-database-quorum":
        refusals.force_database_quorum(inv, replica_facts(inv, case.get("database")), case["host"])
        return {}
    raise AssertionError(command)


# --------------------------------------------------------------------------- the case tables

@pytest.mark.parametrize("path", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_refusal_case(path):
    command = command_of(path)
    inv, facts, case = load_case(path)
    if "proceeds" in case:
        assert decide(command, inv, facts, case) == case["proceeds"]
        return
    with pytest.raises(EasyClusterError) as refused:
        decided = decide(command, inv, facts, case)
        pytest.fail(f"{path.name}: expected a refusal, but {command} goes on with {decided}")
    assert type(refused.value) is COMMANDS[command], f"{command} refuses with {COMMANDS[command].__name__}"
    message = str(refused.value)
    texts = case.get("refused", [])
    for text in [texts] if isinstance(texts, str) else texts:
        assert text in message, message
    if command == "upgrade":
        assert [f"{p.host} {p.check}" for p in refused.value.problems] == case["problems"]
    else:
        assert "problems" not in case, f"{path.name}: problems: is the upgrade's preflight table"
        assert texts, f"{path.name}: refused: the text the operator reads"


def test_every_command_has_a_case_that_refuses_and_one_that_proceeds():
    found = {c: set() for c in COMMANDS}
    for path in CASES.glob("*.yaml"):
        case = yaml.safe_load(path.read_text())
        found[command_of(path)].add("proceeds" if "proceeds" in case else "refused")
    lacking = {c: sorted({"refused", "proceeds"} - kinds) for c, kinds in found.items() if len(kinds) < 2}
    assert not lacking, f"commands lacking a case that refuses or one that proceeds: {lacking}"


def test_the_case_folder_holds_cases_and_their_readme():
    assert not [p.name for p in CASES.iterdir() if p.suffix != ".yaml" and p.name != "README.md"], "cases end in .yaml"
    assert (CASES / "README.md").is_file()
