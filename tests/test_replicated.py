"""cluster.database.hosts on a lab of its own: 3 nodes (lab1..lab3) and 3 database hosts
(lab4..lab6) that `fab deploy` makes one replicated PostgreSQL (Patroni, etcd; HAProxy on each
node), with real XMPP clients registering through every node.

The primary is powered off under a stream of in-band registrations (each acknowledged by
ejabberd only once PostgreSQL committed it, which synchronous replication makes a standby's
too): no acknowledged registration is lost, registrations work again on every node without a
restart, and the old primary comes back as a standby by itself after its boot.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from conftest import fab, own_lab, ssh
from easycluster import xmpp

pytestmark = pytest.mark.lab   # a lab of its own (own_lab), not the session's

LAB = "repl"
NODES, MEMBERS = ["lab1", "lab2", "lab3"], ["lab4", "lab5", "lab6"]
D = f"{LAB}.test"
PW = "repl-pw"
FAILOVER_BOUND = 90       # seconds from the power cut to registrations working on every node
REJOIN_BOUND = 180        # from the old primary's boot to it streaming as a standby


def rfab(inv: str, *args: str, check: bool = True, timeout: float = 1200):
    return fab(*args, "-i", inv, lab=LAB, check=check, timeout=timeout)


def members(lab, skip: tuple[str, ...] = ()) -> list[dict]:
    """Patroni's list of the members, asked on the first member that answers."""
    for h in MEMBERS:
        if h in skip:
            continue
        r = ssh(lab, h, "timeout 10 patronictl -c /etc/patroni/config.yml list -f json", check=False, timeout=30)
        if r.returncode == 0 and r.stdout.strip():
            return json.loads(r.stdout)
    return []


def role_of(state: list[dict]) -> dict[str, str]:
    return {m["Member"]: f"{m['Role']} {m['State']}".lower() for m in state}


def primary_of(lab) -> str:
    return next(m["Member"] for m in members(lab) if m["Role"].lower() == "leader")


def psql(lab, host: str, query: str) -> str:
    return ssh(lab, host, f"cd / && runuser -u postgres -- psql -X -q -t -A -d ejabberd -c \"{query}\"").stdout.strip()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with own_lab(LAB, len(NODES) + len(MEMBERS)) as lab:
        directory = tmp_path_factory.mktemp("replicated")
        data = yaml.safe_load(lab.inventory.read_text())
        data["nodes"] = [{"host": h} for h in NODES]
        data["cluster"]["database"] = {"type": "postgresql", "hosts": MEMBERS,
                                       "password_file": str(directory / "db.password")}
        inv = directory / "replicated.yml"
        inv.write_text(yaml.safe_dump(data, sort_keys=False))
        out = rfab(str(inv), "deploy").stdout
        yield lab, directory, str(inv), out


def test_deploy_makes_a_primary_with_a_synchronous_standby_and_a_rerun_changes_nothing(setup):
    lab, directory, inv, out = setup
    roles = sorted(role_of(members(lab)).values())
    assert roles[0].startswith("leader") and "sync standby streaming" in roles, roles
    for node in NODES:
        xmpp.register(lab.ip(node), f"first{node}@{D}", PW)
    primary = primary_of(lab)
    assert psql(lab, primary, "SELECT string_agg(username, ' ' ORDER BY username) FROM users") == \
        "firstlab1 firstlab2 firstlab3"
    standby = next(h for h in MEMBERS if h != primary)
    assert psql(lab, standby, "SELECT count(*) FROM users") == "3"          # replicated
    assert xmpp.can_login(lab.ip("lab2"), f"firstlab3@{D}", PW)
    assert "no changes: the cluster matches the inventory" in rfab(inv, "deploy").stdout
    # secrets: no password in the output; the replication password only in Patroni's 0600 file;
    # the role's password nowhere on the members (PostgreSQL has its SCRAM verifier)
    passwords = [(directory / "db.password").read_text().strip(),
                 next(directory.glob("*-replication.password")).read_text().strip()]
    assert not any(p in out for p in passwords)
    for h in MEMBERS:
        assert ssh(lab, h, "stat -c '%a %U' /etc/patroni/config.yml").stdout.strip() == "600 postgres"
        found = ssh(lab, h, f"grep -rlF -- '{passwords[0]}' /etc /var/lib/postgresql 2>/dev/null || true").stdout
        assert found.strip() == "", f"the role's password on {h}: {found}"


def test_the_primary_powered_off_fails_over_without_losing_an_acknowledged_write(setup):
    lab, _, inv, _ = setup
    old = primary_of(lab)
    acked: list[tuple[str, str, float]] = []     # (user, node, when)
    failed: list[tuple[str, str, float]] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            user, node = f"w{i}", NODES[i % len(NODES)]
            try:
                xmpp.register(lab.ip(node), f"{user}@{D}", PW)
                acked.append((user, node, time.monotonic()))
            except Exception:      # refused or timed out: not acknowledged, may or may not be stored
                failed.append((user, node, time.monotonic()))
            i += 1
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(5)
    cut = time.monotonic()
    lab.poweroff(old)
    try:
        deadline = cut + FAILOVER_BOUND
        while time.monotonic() < deadline:   # every node has registered again since the cut
            if all(any(n == node and t > cut + 1 for _, n, t in acked) for node in NODES):
                break
            time.sleep(1)
        time.sleep(5)
    finally:
        stop.set()
        thread.join(60)
    back = {node: min((t for _, n, t in acked if n == node and t > cut + 1), default=None) for node in NODES}
    assert all(back.values()), f"registrations did not work again within {FAILOVER_BOUND}s on: " \
                               f"{[n for n, t in back.items() if t is None]}"
    print(f"failover: registrations back after {max(back.values()) - cut:.1f}s "
          f"(per node: {', '.join(f'{n} {t - cut:.1f}s' for n, t in back.items())}); "
          f"{len([1 for _, _, t in failed if t > cut])} refused meanwhile, {len(acked)} acknowledged")
    new = primary_of(lab)
    assert new != old
    # every acknowledged registration is in the new primary's table
    stored = set(psql(lab, new, "SELECT username FROM users WHERE username LIKE 'w%'").split())
    lost = [u for u, _, _ in acked if u not in stored]
    assert acked and not lost, f"{len(lost)} acknowledged registrations lost: {lost[:10]}"
    assert xmpp.can_login(lab.ip("lab3"), f"firstlab1@{D}", PW)

    lab.boot(old)
    deadline = time.monotonic() + REJOIN_BOUND
    while role_of(members(lab)).get(old) not in ("replica streaming", "sync standby streaming"):
        assert time.monotonic() < deadline, f"{old} not back as a standby: {role_of(members(lab))}"
        time.sleep(2)
    assert psql(lab, old, "SELECT count(*) FROM users WHERE username LIKE 'w%'") == str(len(stored))
    assert "no changes" in rfab(inv, "deploy").stdout
