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
import socket
import subprocess
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
    st = rfab(inv, "status").stdout
    assert "cluster: healthy" in st and "database members: " in st and "sync standby streaming" in st, st
    # the members' firewall: PostgreSQL and Patroni for the nodes, etcd for the members only,
    # nothing for anyone else (this machine, on the lab's bridge)
    assert opens(lab, "lab1", primary, 5432) and opens(lab, "lab1", primary, 8008)
    assert not opens(lab, "lab1", primary, 2379)
    assert opens(lab, standby, primary, 2379) and opens(lab, standby, primary, 5432)
    for port in (5432, 2379):
        with pytest.raises(OSError):
            socket.create_connection((lab.ip(primary), port), timeout=3).close()
    # secrets: no password in the output; the replication password only in Patroni's 0600 file;
    # the role's password nowhere on the members (PostgreSQL has its SCRAM verifier)
    passwords = [(directory / "db.password").read_text().strip(),
                 next(directory.glob("*-replication.password")).read_text().strip()]
    assert not any(p in out for p in passwords)
    for h in MEMBERS:
        assert ssh(lab, h, "stat -c '%a %U' /etc/patroni/config.yml").stdout.strip() == "600 postgres"
        found = ssh(lab, h, f"grep -rlF -- '{passwords[0]}' /etc /var/lib/postgresql 2>/dev/null || true").stdout
        assert found.strip() == "", f"the role's password on {h}: {found}"


def test_backup_is_taken_on_a_standby_and_the_restore_runbook_puts_it_back(setup):
    """docs/runbooks/restore.md, "A replicated database": the dump, taken on a standby, restored
    into the primary; an account unregistered after the dump is back."""
    lab, _, inv, _ = setup
    out = rfab(inv, "backup").stdout
    line = next(line for line in out.splitlines() if "pg_dump of ejabberd:" in line)
    where, path = line[1:line.index("]")], line.split("pg_dump of ejabberd: ", 1)[1].split(" (")[0]
    primary = primary_of(lab)
    assert where in MEMBERS and where != primary, line
    ssh(lab, "lab1", f"ejabberdctl unregister firstlab2 {D}")
    assert not xmpp.can_login(lab.ip("lab3"), f"firstlab2@{D}", PW)
    restore = subprocess.run(
        f"ssh -F {lab.ssh_config} {where} cat {path} | ssh -F {lab.ssh_config} {primary} "
        "'cd / && runuser -u postgres -- pg_restore --clean --if-exists --single-transaction --dbname=ejabberd'",
        shell=True, capture_output=True, text=True, timeout=120)
    assert restore.returncode == 0, restore.stderr
    rfab(inv, "rolling-restart", "--drain", "1")
    assert xmpp.can_login(lab.ip("lab3"), f"firstlab2@{D}", PW)


def opens(lab, source: str, target: str, port: int) -> bool:
    return ssh(lab, source, f"timeout 3 bash -c '</dev/tcp/{target}/{port}'", check=False).returncode == 0


def test_a_node_removed_is_shut_out_of_every_member_and_let_in_again_when_added(setup):
    lab, _, inv, _ = setup
    primary = primary_of(lab)
    hba = f"host ejabberd ejabberd {lab.ip('lab3')}/32"
    assert all(hba in ssh(lab, h, "cat /etc/patroni/config.yml").stdout for h in MEMBERS)
    out = rfab(inv, "remove-node", "--host", "lab3", "--drain", "1").stdout
    assert "ejabberd@lab3 no longer let in: ok" in out, out
    for h in MEMBERS:
        assert hba not in ssh(lab, h, "cat /etc/patroni/config.yml").stdout
    assert not opens(lab, "lab3", primary, 5432) and opens(lab, "lab2", primary, 5432)
    out = rfab(inv, "add-master", "--host", "lab3").stdout
    assert "[database lab4] write /etc/patroni/config.yml" in out, out
    assert opens(lab, "lab3", primary, 5432)
    assert xmpp.can_login(lab.ip("lab3"), f"firstlab1@{D}", PW)
    assert "no changes" in rfab(inv, "deploy").stdout


class Registrations:
    """In-band registrations through the nodes in turn, one after another, for as long as it
    runs: each acknowledged (ejabberd answered success) or not (refused or timed out), with when."""

    def __init__(self, lab, prefix: str):
        self.lab, self.prefix = lab, prefix
        self.acked: list[tuple[str, str, float]] = []     # (user, node, when)
        self.failed: list[tuple[str, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            user, node = f"{self.prefix}{i}", NODES[i % len(NODES)]
            try:
                xmpp.register(self.lab.ip(node), f"{user}@{D}", PW)
                self.acked.append((user, node, time.monotonic()))
            except Exception:      # refused or timed out: not acknowledged, may or may not be stored
                self.failed.append((user, node, time.monotonic()))
            i += 1

    def across(self, fault, what: str) -> float:
        """Registrations for 3 s, then `fault()`, then until every node has registered again
        (at most FAILOVER_BOUND s) and 2 s more. Returns the seconds from the fault until the
        last node registered again; asserts every node did."""
        self._thread.start()
        try:
            time.sleep(3)
            cut = time.monotonic()
            fault()
            deadline = cut + FAILOVER_BOUND
            while time.monotonic() < deadline and not all(
                    any(n == node and t > cut + 1 for _, n, t in self.acked) for node in NODES):
                time.sleep(1)
            time.sleep(2)
        finally:
            self._stop.set()
            self._thread.join(60)
        back = {node: min((t for _, n, t in self.acked if n == node and t > cut + 1), default=None) for node in NODES}
        assert all(back.values()), f"{what}: registrations did not work again within {FAILOVER_BOUND}s on " \
                                   f"{[n for n, t in back.items() if t is None]}"
        took = max(back.values()) - cut
        print(f"{what}: registrations back on every node after {took:.1f}s "
              f"(per node: {', '.join(f'{n} {t - cut:.1f}s' for n, t in back.items())}); "
              f"{len([1 for _, _, t in self.failed if t > cut])} failed meanwhile, {len(self.acked)} acknowledged")
        return took

    def assert_none_lost(self, primary: str) -> set[str]:
        stored = set(psql(self.lab, primary, f"SELECT username FROM users WHERE username LIKE '{self.prefix}%'").split())
        lost = [u for u, _, _ in self.acked if u not in stored]
        assert self.acked and not lost, f"{len(lost)} acknowledged registrations lost: {lost[:10]}"
        return stored


def wait_standby(lab, host: str) -> None:
    deadline = time.monotonic() + REJOIN_BOUND
    while role_of(members(lab)).get(host) not in ("replica streaming", "sync standby streaming"):
        assert time.monotonic() < deadline, f"{host} not back as a standby: {role_of(members(lab))}"
        time.sleep(2)


def test_the_primary_powered_off_fails_over_without_losing_an_acknowledged_write(setup):
    lab, _, inv, _ = setup
    old = primary_of(lab)
    writes = Registrations(lab, "w")
    writes.across(lambda: lab.poweroff(old), "primary powered off")
    new = primary_of(lab)
    assert new != old
    stored = writes.assert_none_lost(new)
    assert xmpp.can_login(lab.ip("lab3"), f"firstlab1@{D}", PW)
    st = rfab(inv, "status", check=False)
    assert st.returncode != 0 and f"database member {old}: unreachable" in st.stdout, st.stdout

    lab.boot(old)                  # it comes back as a standby by itself (a copy of the new primary)
    wait_standby(lab, old)
    assert psql(lab, old, "SELECT count(*) FROM users WHERE username LIKE 'w%'") == str(len(stored))
    assert "no changes" in rfab(inv, "deploy").stdout
    assert "cluster: healthy" in rfab(inv, "status").stdout


def test_a_planned_switchover_and_the_primary_cut_off_lose_nothing(setup):
    lab, _, inv, _ = setup
    old = primary_of(lab)
    target = next(m["Member"] for m in members(lab) if m["Role"].lower() == "sync standby")
    writes = Registrations(lab, "s")
    writes.across(lambda: ssh(lab, old, f"patronictl -c /etc/patroni/config.yml switchover --leader {old} "
                                        f"--candidate {target} --force", timeout=90), "planned switchover")
    assert primary_of(lab) == target
    writes.assert_none_lost(target)
    wait_standby(lab, old)

    cut_off = primary_of(lab)
    writes = Registrations(lab, "c")
    try:
        writes.across(lambda: lab.partition(cut_off), "primary cut off from the network")
        new = primary_of(lab)
        assert new != cut_off
        writes.assert_none_lost(new)
    finally:
        lab.heal_link(cut_off)
    wait_standby(lab, cut_off)     # demoted while cut off, it follows the new primary again
    assert "cluster: healthy" in rfab(inv, "status").stdout


def test_patroni_stopped_on_the_primary_hands_over_and_it_comes_back_as_a_standby(setup):
    lab, _, inv, _ = setup
    old = primary_of(lab)
    writes = Registrations(lab, "p")
    writes.across(lambda: ssh(lab, old, "systemctl stop patroni", timeout=90), "Patroni stopped on the primary")
    new = primary_of(lab)
    assert new != old
    writes.assert_none_lost(new)
    out = rfab(inv, "deploy").stdout                 # deploy starts it again
    assert f"[database {old}] start etcd and Patroni" in out, out
    wait_standby(lab, old)
    assert "cluster: healthy" in rfab(inv, "status").stdout


def test_one_etcd_member_lost_changes_nothing_for_ejabberd_and_status_names_it(setup):
    lab, _, inv, _ = setup
    standby = next(m["Member"] for m in members(lab) if m["Role"].lower() != "leader")
    ssh(lab, standby, "systemctl stop etcd")
    try:
        st = rfab(inv, "status", check=False)
        assert st.returncode != 0 and "etcd (Patroni's quorum store) runs on 2 of 3 database hosts" in st.stdout, \
            st.stdout
        xmpp.register(lab.ip("lab2"), f"quorum@{D}", PW)            # the quorum holds: writes go on
        assert xmpp.can_login(lab.ip("lab1"), f"quorum@{D}", PW)
    finally:
        ssh(lab, standby, "systemctl start etcd")
    out = rfab(inv, "deploy").stdout
    assert "no changes" in out, out
