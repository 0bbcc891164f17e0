"""cluster.database.hosts on a lab of its own: 3 nodes (lab1..lab3) and 3 database hosts
(lab4..lab6). A Mnesia cluster is deployed, then `fab migrate-to-sql` moves its data into one
replicated PostgreSQL it makes on the database hosts (Patroni, etcd; HAProxy on each node), with
real XMPP clients registering through every node.

The primary is powered off under a stream of in-band registrations (each acknowledged by
ejabberd only once PostgreSQL committed it, which synchronous replication makes a standby's
too): no acknowledged registration is lost, registrations work again on every node without a
restart, and the old primary comes back as a standby by itself after its boot. Members are
taken out (the primary alive, a standby dead) and added again by `fab deploy`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
import yaml

from conftest import fab, own_lab, ssh
from easycluster import xmpp
from easycluster_lab.writes import Registrations

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
        mnesia = directory / "mnesia.yml"
        mnesia.write_text(yaml.safe_dump(data, sort_keys=False))
        rfab(str(mnesia), "deploy")
        for node in NODES:      # in Mnesia: moved into the replicated database by migrate-to-sql
            xmpp.register(lab.ip(node), f"first{node}@{D}", PW)
        data["cluster"]["database"] = {"type": "postgresql", "hosts": MEMBERS,
                                       "password_file": str(directory / "db.password")}
        inv = directory / "replicated.yml"
        inv.write_text(yaml.safe_dump(data, sort_keys=False))
        out = rfab(str(inv), "migrate-to-sql").stdout
        yield lab, directory, str(inv), out


def test_migrate_to_sql_fills_a_primary_with_a_synchronous_standby_and_a_rerun_changes_nothing(setup):
    lab, directory, inv, out = setup
    assert "replicated PostgreSQL on lab4, lab5, lab6" in out and "rows per table" in out, out
    roles = sorted(role_of(members(lab)).values())
    assert roles[0].startswith("leader") and "sync standby streaming" in roles, roles
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


def registrations(lab, prefix: str) -> Registrations:
    """In-band registrations through the nodes in turn (easycluster_lab.writes), across a fault."""
    return Registrations(lab.ip, NODES, D, PW, prefix, FAILOVER_BOUND)


def assert_none_lost(lab, writes: Registrations, primary: str) -> set[str]:
    stored = set(psql(lab, primary, f"SELECT username FROM users WHERE username LIKE '{writes.prefix}%'").split())
    lost = writes.lost(stored)
    assert writes.acked and not lost, f"{len(lost)} acknowledged registrations lost: {lost[:10]}"
    return stored


def test_members_taken_out_alive_or_dead_and_added_again_lose_nothing(setup):
    """docs/runbooks/database-members.md: the primary taken out under registrations (it hands
    over first), a powered-off standby taken out offline; `fab deploy` adds each back afresh."""
    lab, _, inv, _ = setup
    old = primary_of(lab)
    writes = registrations(lab, "r")
    taken: list[str] = []
    writes.across(lambda: taken.append(rfab(inv, "remove-database-host", "--host", old).stdout), "primary taken out")
    assert f"{old} hands the primary over to" in taken[0] and f"etcd forgets {old}" in taken[0], taken[0]
    new = primary_of(lab)
    assert_none_lost(lab, writes, new)
    quorum = ssh(lab, new, "etcdctl member list -w simple").stdout
    assert old not in quorum and new in quorum, quorum
    assert ssh(lab, old, "systemctl is-active patroni etcd; test -e /var/lib/etcd/easycluster && echo data",
               check=False).stdout.split() == ["inactive", "inactive"], "patroni and etcd stopped, etcd's data removed"
    out = rfab(inv, "deploy").stdout                # listed still: it joins again, a fresh copy
    assert f"[database {old}] join the running quorum store" in out, out
    assert role_of(members(lab)).get(old) in ("replica streaming", "sync standby streaming")

    dead = next(m["Member"] for m in members(lab) if m["Role"].lower() == "replica")
    lab.poweroff(dead)
    out = rfab(inv, "remove-database-host", "--host", dead).stdout
    assert f"etcd forgets {dead}" in out and "stop Patroni and etcd" not in out, out
    assert dead not in ssh(lab, new, "etcdctl member list -w simple").stdout
    xmpp.register(lab.ip("lab1"), f"twoleft@{D}", PW)    # a primary and its synchronous standby
    lab.boot(dead)
    out = rfab(inv, "deploy").stdout
    assert f"[database {dead}] join the running quorum store" in out, out
    assert psql(lab, dead, "SELECT count(*) FROM users WHERE username = 'twoleft'") == "1"
    assert "no changes" in rfab(inv, "deploy").stdout
    assert "cluster: healthy" in rfab(inv, "status").stdout


def wait_standby(lab, host: str) -> None:
    deadline = time.monotonic() + REJOIN_BOUND
    while role_of(members(lab)).get(host) not in ("replica streaming", "sync standby streaming"):
        assert time.monotonic() < deadline, f"{host} not back as a standby: {role_of(members(lab))}"
        time.sleep(2)


def test_the_primary_powered_off_fails_over_without_losing_an_acknowledged_write(setup):
    lab, _, inv, _ = setup
    old = primary_of(lab)
    writes = registrations(lab, "w")
    writes.across(lambda: lab.poweroff(old), "primary powered off")
    new = primary_of(lab)
    assert new != old
    stored = assert_none_lost(lab, writes, new)
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
    writes = registrations(lab, "s")
    writes.across(lambda: ssh(lab, old, f"patronictl -c /etc/patroni/config.yml switchover --leader {old} "
                                        f"--candidate {target} --force", timeout=90), "planned switchover")
    assert primary_of(lab) == target
    assert_none_lost(lab, writes, target)
    wait_standby(lab, old)

    cut_off = primary_of(lab)
    writes = registrations(lab, "c")
    try:
        writes.across(lambda: lab.partition(cut_off), "primary cut off from the network")
        new = primary_of(lab)
        assert new != cut_off
        assert_none_lost(lab, writes, new)
    finally:
        lab.heal_link(cut_off)
    wait_standby(lab, cut_off)     # demoted while cut off, it follows the new primary again
    assert "cluster: healthy" in rfab(inv, "status").stdout


def test_patroni_stopped_on_the_primary_hands_over_and_it_comes_back_as_a_standby(setup):
    lab, _, inv, _ = setup
    old = primary_of(lab)
    writes = registrations(lab, "p")
    writes.across(lambda: ssh(lab, old, "systemctl stop patroni", timeout=90), "Patroni stopped on the primary")
    new = primary_of(lab)
    assert new != old
    assert_none_lost(lab, writes, new)
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
