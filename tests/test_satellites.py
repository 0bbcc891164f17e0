"""Satellites on a lab of their own: 3 masters and 2 satellites (nodes[].role), with users,
roster items and real XMPP clients.

No disc copy on a satellite (Mnesia's own table info); clients log in and chat on satellites,
across to the masters' clients; a satellite restarted is a satellite still; a master killed,
the satellites serve on; a satellite removed and added back; a node turned from master to
satellite and back by `fab deploy`, every user and roster item kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import fab, own_lab, ssh
from easycluster import xmpp

pytestmark = pytest.mark.lab   # a lab of its own (own_lab), not the session's

LAB = "sat"
MASTERS, SATELLITES = ["lab1", "lab2", "lab3"], ["lab4", "lab5"]
PASSWORD = "sat-pw"
USERS = [f"s{i}" for i in range(6)]


def domain() -> str:
    return f"{LAB}.test"


def jid(user: str) -> str:
    return f"{user}@{domain()}"


def inventory(lab, directory: Path, roles: dict[str, str]) -> str:
    data = yaml.safe_load(lab.inventory.read_text())
    data["nodes"] = [{"host": h, **({"role": roles[h]} if h in roles else {})} for h in MASTERS + SATELLITES]
    path = directory / f"inventory-{'-'.join(f'{h}{r[0]}' for h, r in sorted(roles.items())) or 'all'}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def sfab(inv: str, *args: str, check: bool = True, timeout: float = 900):
    return fab(*args, "-i", inv, lab=LAB, check=check, timeout=timeout)


def node_status(lab, host: str) -> dict:
    return json.loads(ssh(lab, host, "ejabberdctl easy_cluster_status").stdout.splitlines()[-1])


def assert_satellite(lab, host: str) -> None:
    """From Mnesia on the node itself: its schema in RAM, no disc copy of any table, no
    table file in its Mnesia directory."""
    st = node_status(lab, host)
    name = f"ejabberd@{host}"
    disc = {t: holders[name] for t, holders in st["tables"].items()
            if holders.get(name) in ("disc_copies", "disc_only_copies")}
    assert st["schema"] == "ram_copies" and not disc, (host, st["schema"], disc)
    assert "session" in st["tables"] and st["tables"]["session"].get(name) == "ram_copies"
    files = ssh(lab, host, "ls /var/lib/ejabberd | grep -E '\\.(DAT|DCD|DCL|LOG)$' || true").stdout.split()
    assert not files, f"{host} has Mnesia table files: {files}"


def status(inv: str) -> dict:
    return json.loads(sfab(inv, "status", "--json", check=False).stdout)


def users_and_roster(lab, host: str) -> tuple[list[str], list[str]]:
    d = domain()
    users = sorted(ssh(lab, host, f"ejabberdctl registered_users {d}").stdout.split())
    roster = sorted(line.split()[0] for line in ssh(lab, host, f"ejabberdctl get_roster {USERS[0]} {d}").stdout.splitlines())
    return users, roster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with own_lab(LAB, len(MASTERS + SATELLITES)) as lab:
        directory = tmp_path_factory.mktemp("satellites")
        inv = inventory(lab, directory, {h: "satellite" for h in SATELLITES})
        out = sfab(inv, "deploy", "--dry").stdout
        assert "then the satellites, one at a time: ejabberd@lab4, ejabberd@lab5" in out, out
        deployed = sfab(inv, "deploy").stdout
        assert "cluster: 5 members, 3 masters, 2 satellites (healthy)" in deployed, deployed
        d = domain()
        script = "; ".join(f"ejabberdctl register {u} {d} {PASSWORD} >/dev/null" for u in USERS)
        script += "; " + "; ".join(f"ejabberdctl add_rosteritem {USERS[0]} {d} {u} {d} {u} friends both"
                                   for u in USERS[1:4])
        ssh(lab, "lab1", script)
        time.sleep(2)
        yield lab, directory, inv, users_and_roster(lab, "lab1")


def test_satellites_hold_no_disc_copy_and_status_shows_roles(cluster):
    lab, _, inv, expected = cluster
    for h in SATELLITES:
        assert_satellite(lab, h)
        assert users_and_roster(lab, h) == expected       # stored data, read on the masters
    st = status(inv)
    assert st["healthy"], st["problems"]
    roles = {n["host"]: (n["role"], n["in_role"], n["master"]) for n in st["nodes"]}
    assert roles == {**{h: ("master", True, True) for h in MASTERS}, **{h: ("satellite", True, False) for h in SATELLITES}}
    assert "satellite" in sfab(inv, "status").stdout
    assert "no changes: the cluster matches the inventory" in sfab(inv, "deploy").stdout


def test_clients_on_satellites_chat_with_clients_on_masters(cluster):
    lab, _, _, _ = cluster
    for sat, master in (("lab4", "lab1"), ("lab5", "lab3")):
        assert xmpp.can_login(lab.ip(sat), jid(USERS[1]), PASSWORD), f"no login on {sat}"
        for a, b in ((sat, master), (master, sat)):
            latency = xmpp.send_and_receive((lab.ip(a), jid(USERS[1]), PASSWORD),
                                            (lab.ip(b), jid(USERS[2]), PASSWORD), f"{a} to {b}")
            assert latency < 5


def test_a_satellite_restarted_is_still_a_satellite(cluster):
    lab, _, inv, expected = cluster
    ssh(lab, "lab4", "systemctl restart ejabberd")
    deadline = time.monotonic() + 120
    while not status(inv)["healthy"]:
        assert time.monotonic() < deadline, status(inv)["problems"]
        time.sleep(1)
    assert_satellite(lab, "lab4")
    assert users_and_roster(lab, "lab4") == expected
    assert xmpp.can_login(lab.ip("lab4"), jid(USERS[3]), PASSWORD)


def test_a_master_killed_the_satellites_serve_on(cluster):
    lab, _, inv, _ = cluster
    ssh(lab, "lab1", "systemctl kill -s KILL ejabberd")     # systemd starts it again (Restart=on-failure)
    try:
        for sat in SATELLITES:
            assert xmpp.can_login(lab.ip(sat), jid(USERS[4]), PASSWORD), f"no login on {sat} with lab1 down"
            xmpp.send_and_receive((lab.ip(sat), jid(USERS[4]), PASSWORD), (lab.ip("lab2"), jid(USERS[5]), PASSWORD),
                                  f"{sat} to lab2 with lab1 down")
    finally:
        deadline = time.monotonic() + 180
        while not status(inv)["healthy"]:
            assert time.monotonic() < deadline, status(inv)["problems"]
            time.sleep(1)
    for sat in SATELLITES:
        assert_satellite(lab, sat)


def test_every_master_stopped_the_satellites_say_so_and_recover_by_themselves(cluster):
    lab, _, inv, expected = cluster
    for h in reversed(MASTERS):
        ssh(lab, h, "systemctl stop ejabberd")
    st = status(inv)
    assert "no master runs: the satellites hold no data of their own" in st["problems"], st["problems"]
    assert any(p.startswith("ejabberd@lab4: a satellite with no master running") for p in st["problems"])
    for h in MASTERS:                                  # as an operator brings them back: the unit
        ssh(lab, h, "systemctl start --no-block ejabberd")
    deadline = time.monotonic() + 180
    while not (st := status(inv))["healthy"]:          # no step on the satellites
        assert time.monotonic() < deadline, st["problems"]
        time.sleep(1)
    for sat in SATELLITES:
        assert_satellite(lab, sat)
        assert users_and_roster(lab, sat) == expected
        assert xmpp.can_login(lab.ip(sat), jid(USERS[2]), PASSWORD), f"no login on {sat}"


def test_a_satellite_removed_and_added_back(cluster):
    lab, _, inv, expected = cluster
    out = sfab(inv, "remove-node", "--host", "lab5", "--drain", "1").stdout
    assert "ejabberd@lab5" not in status(inv)["nodes"][0]["db_nodes"], out
    refused = sfab(inv, "add-master", "--host", "lab5", check=False)
    assert refused.returncode == 1 and "`fab add-satellite --host lab5`" in refused.stderr, refused.stderr
    added = sfab(inv, "add-satellite", "--host", "lab5").stdout
    assert "[lab5] in ejabberd@lab1's running_db_nodes, no disc copy here: ok" in added, added
    assert_satellite(lab, "lab5")
    assert users_and_roster(lab, "lab5") == expected
    assert status(inv)["healthy"]


def test_a_master_becomes_a_satellite_and_back_with_nothing_lost(cluster):
    lab, directory, _, expected = cluster
    as_satellite = inventory(lab, directory, {"lab3": "satellite", "lab4": "satellite", "lab5": "satellite"})
    out = sfab(as_satellite, "deploy").stdout
    assert "make ejabberd@lab3 a satellite (it is a master)" in out, out
    assert "cluster: 5 members, 2 masters, 3 satellites (healthy)" in out, out
    assert_satellite(lab, "lab3")
    for h in MASTERS + SATELLITES:
        assert users_and_roster(lab, h) == expected, h
    back = inventory(lab, directory, {h: "satellite" for h in SATELLITES})
    out = sfab(back, "deploy").stdout
    assert "make ejabberd@lab3 a master (it is a satellite)" in out, out
    assert "join ejabberd@lab3 to ejabberd@lab1 as master, during its first start" in out, out
    assert "cluster: 5 members, 3 masters, 2 satellites (healthy)" in out, out
    st = node_status(lab, "lab3")
    assert st["master"] and st["schema"] == "disc_copies" and not st["missing_tables"]
    for h in MASTERS + SATELLITES:
        assert users_and_roster(lab, h) == expected, h
    assert "no changes: the cluster matches the inventory" in sfab(back, "deploy").stdout
