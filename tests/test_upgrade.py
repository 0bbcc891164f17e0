"""`fab upgrade` on real hosts: ejabberd 23.01 -> 24.12 (Debian's bookworm-backports) and back,
with users, rosters, offline messages, a MUC room and (for the full stop) a MAM archive in
Mnesia. A test of Debian 12 (bookworm), whose 23.01 and backported 24.12 these are: on a lab of its
own, of three bookworm hosts (the session's lab runs Debian 13):

1. deploy refuses another version and names `fab upgrade`;
2. rolling 23.01 -> 24.12 under traffic: no message lost, every item on every node, smoke,
   deploy with the new pin says "no changes";
3. the way back from a rolling upgrade: `fab upgrade` with 23.01 pinned, rolling too;
4. with the archive on (its record changes in 24.02): a full stop; a host powered off in the
   middle stops it; `fab break-lock`, then `fab upgrade --revert` brings back 23.01 with
   everything as before;
5. the full stop again, to the end: the archive transformed, the outage measured.
The lab's hosts run 24.12 afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import conftest
from conftest import FAB, REPO, own_lab, ssh, unit_state
from easycluster_lab import Lab
from traffic import Traffic

OLD, NEW = "23.01-1", "24.12-3~bpo12+1"
UPGRADE_LAB = "tupg"
PASSWORD = "upgrade-pw"
USERS = [f"up{i}" for i in range(6)]
TABLES = ("passwd", "roster", "offline_msg", "muc_room", "archive_msg")


@pytest.fixture(scope="module")
def lab():
    """This module's lab: three Debian 12 hosts (bookworm: ejabberd 23.01, 24.12 in backports)."""
    with own_lab(UPGRADE_LAB, 3, release="bookworm") as the_lab:
        yield the_lab


def fab(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return conftest.fab(*args, lab=UPGRADE_LAB, **kwargs)


def domain(lab) -> str:
    return f"{lab.name}.test"


def pinned(lab, directory: Path, version: str, mam: bool = False) -> str:
    """The lab's inventory with another version pinned (and the archive on or off)."""
    data = yaml.safe_load(lab.inventory.read_text())
    data["cluster"]["ejabberd_version"] = version
    data["cluster"]["mam"] = mam
    path = directory / f"inventory-{version}-{'mam' if mam else 'plain'}.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def hosts_of(lab) -> list[str]:
    return [n["host"] for n in yaml.safe_load(lab.inventory.read_text())["nodes"]]


def table_sizes(lab, host: str) -> dict[str, int]:
    tables = json.loads(ssh(lab, host, "ejabberdctl easy_cluster_tables").stdout.splitlines()[-1])["tables"]
    return {t: tables[t]["size"] for t in TABLES if t in tables}


def attributes(lab, host: str, table: str) -> list[str]:
    tables = json.loads(ssh(lab, host, "ejabberdctl easy_cluster_tables").stdout.splitlines()[-1])["tables"]
    return tables[table]["attributes"]


def items(lab, host: str) -> dict:
    """What the users have, as one node reads it."""
    d = domain(lab)
    return {"users": sorted(ssh(lab, host, f"ejabberdctl registered_users {d}").stdout.split()),
            "roster": sorted(line.split()[0] for line in
                             ssh(lab, host, f"ejabberdctl get_roster {USERS[0]} {d}").stdout.splitlines()),
            "offline": ssh(lab, host, f"ejabberdctl get_offline_count {USERS[5]} {d}").stdout.strip(),
            "tables": table_sizes(lab, host)}


def assert_everything_everywhere(lab, hosts: list[str], expected: dict) -> None:
    for h in hosts:
        assert items(lab, h) == expected, f"{h} differs"


def versions(lab) -> dict[str, str]:
    st = json.loads(fab("status", "--json", check=False).stdout)
    return {n["host"]: n["ejabberd_version"] for n in st["nodes"]}


def fab_with(inventory: str, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return fab(*args, "-i", inventory, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(lab, tmp_path_factory):
    """The lab's cluster on 23.01, healthy, with users, a roster, offline messages and a MUC room."""
    fab("deploy", timeout=600)
    hosts = hosts_of(lab)
    d = domain(lab)
    script = "; ".join(f"ejabberdctl register {u} {d} {PASSWORD} >/dev/null" for u in USERS)
    script += "; " + "; ".join(f"ejabberdctl add_rosteritem {USERS[0]} {d} {u} {d} {u} friends both"
                               for u in USERS[1:4])
    script += "; " + "; ".join(f"ejabberdctl send_message chat {USERS[1]}@{d} {USERS[5]}@{d} '' 'kept {i}'"
                               for i in range(3))
    script += (f"; ejabberdctl create_room lounge conference.{d} {d}"
               f"; ejabberdctl change_room_option lounge conference.{d} persistent true")
    ssh(lab, hosts[0], script)
    time.sleep(2)   # on disc everywhere before anything stops
    return hosts, tmp_path_factory.mktemp("upgrade"), items(lab, hosts[0])


def test_deploy_refuses_another_version_and_names_upgrade(cluster, lab):
    hosts, directory, _ = cluster
    proc = fab_with(pinned(lab, directory, NEW), "deploy", check=False)
    assert proc.returncode == 1
    for h in hosts:
        assert f"{h}  version  ejabberd {OLD} installed, the inventory pins {NEW}" in proc.stderr, proc.stderr
    assert "`fab upgrade` moves the running cluster to the pinned version" in proc.stderr
    assert set(versions(lab).values()) == {OLD}       # nothing changed


def test_a_rolling_upgrade_under_traffic_loses_nothing(cluster, lab):
    hosts, directory, expected = cluster
    new = pinned(lab, directory, NEW)
    dry = fab_with(new, "upgrade", "--dry").stdout
    assert f"strategy: rolling: no table's record differs between the running version and {NEW}" in dry, dry
    assert "dry run: nothing was changed" in dry and set(versions(lab).values()) == {OLD}
    for h in hosts:   # 24.12's unit has no watchdog: the drop-in stops turning it off
        assert f"[{h}]   /etc/systemd/system/ejabberd.service.d/easycluster.conf: for {NEW}" in dry, dry
        assert f"[{h}]     -WatchdogSec=0" in dry, dry
    endpoints = [(lab.ip(h), f"{USERS[i % len(USERS)]}@{domain(lab)}") for i, h in enumerate(hosts)]
    with Traffic(endpoints, PASSWORD) as traffic:
        time.sleep(2)
        out = fab_with(new, "upgrade").stdout
        time.sleep(2)
        traffic.settle()
    assert f"cluster: {len(hosts)} nodes on ejabberd {NEW} (healthy)" in out, out
    for h in hosts:
        assert f"[{h}] back in every peer's running_db_nodes, every table loaded: ok" in out
    checked, lost = traffic.accounting()
    assert len(checked) > 20 * len(hosts), f"too little traffic to judge: {len(checked)} messages"
    assert not lost, f"{len(lost)} of {len(checked)} messages lost, e.g. {lost[:3]}"
    assert versions(lab) == {h: NEW for h in hosts}
    assert_everything_everywhere(lab, hosts, expected)
    smoke = fab_with(new, "smoke").stdout
    assert "smoke: PASS" in smoke, smoke
    again = fab_with(new, "deploy").stdout
    assert "no changes: the cluster matches the inventory" in again, again
    assert "no changes: every node runs ejabberd" in fab_with(new, "upgrade").stdout
    for h in hosts:   # 24.12's unit has no watchdog: the drop-in no longer turns it off
        assert "WatchdogSec" not in ssh(lab, h, "cat /etc/systemd/system/ejabberd.service.d/easycluster.conf").stdout


def test_the_way_back_from_a_rolling_upgrade_rolls_too(cluster, lab):
    hosts, directory, expected = cluster
    out = fab_with(pinned(lab, directory, OLD), "upgrade").stdout
    assert f"strategy: rolling" in out and f"cluster: {len(hosts)} nodes on ejabberd {OLD} (healthy)" in out, out
    assert versions(lab) == {h: OLD for h in hosts}
    for h in hosts:   # the backported libraries went back to bookworm's with it
        assert ssh(lab, h, "dpkg-query -W -f='${Version}\\n' | grep -c '~bpo' || true").stdout.strip() == "0"
    assert_everything_everywhere(lab, hosts, expected)


def _archive(lab, hosts: list[str]) -> None:
    d = domain(lab)
    ssh(lab, hosts[0], "; ".join(f"ejabberdctl send_message chat {USERS[1]}@{d} {USERS[2]}@{d} '' 'archived {i}'"
                                 for i in range(4)))
    time.sleep(2)


def test_a_host_powered_off_mid_full_stop_upgrade_and_the_way_back(cluster, lab):
    hosts, directory, expected = cluster
    old_mam, new_mam = pinned(lab, directory, OLD, mam=True), pinned(lab, directory, NEW, mam=True)
    fab_with(old_mam, "deploy")
    _archive(lab, hosts)
    before = items(lab, hosts[0])
    assert before["tables"]["archive_msg"] > 0 and attributes(lab, hosts[0], "archive_msg")[-1] == "type"
    dry = fab_with(new_mam, "upgrade", "--dry").stdout
    assert ("strategy: full stop: the record of archive_msg (gains origin_id) differs in ejabberd "
            f"{NEW}") in dry, dry
    victim = hosts[1]
    proc = subprocess.Popen([str(FAB), "upgrade", "-i", new_mam], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "EASYCLUSTER_LAB": UPGRADE_LAB})
    lines = []
    for line in proc.stdout:      # powered off once it is stopped and copied, before its package changes
        lines.append(line)
        if line.startswith(f"[{victim}] copy the Mnesia directory of ejabberd@{victim}: ok"):
            fab("lab.poweroff", "--host", victim)
    proc.wait(timeout=600)
    out = "".join(lines)
    assert proc.returncode == 1, out
    assert f"[{victim}] install ejabberd {NEW} failed" in out or f"[{victim}] install ejabberd {NEW}: FAILED" in out, out
    assert "the upgrade stopped: upgraded so far:" in out and "`fab upgrade --revert`" in out, out
    # the documented way back (docs/runbooks/upgrade.md)
    fab("lab.boot", "--host", victim)
    locked = fab_with(old_mam, "upgrade", "--revert", check=False)
    assert locked.returncode == 1 and "the lock is stale" in locked.stderr, locked.stderr
    fab_with(old_mam, "break-lock")
    back = fab_with(old_mam, "upgrade", "--revert").stdout
    assert f"reverted: {len(hosts)} nodes on ejabberd {OLD}" in back and "cluster: healthy" in back, back
    assert versions(lab) == {h: OLD for h in hosts}
    assert_everything_everywhere(lab, hosts, before)
    assert attributes(lab, hosts[-1], "archive_msg")[-1] == "type"
    assert "smoke: PASS" in fab_with(old_mam, "smoke").stdout


def test_a_full_stop_upgrade_transforms_the_archive_and_keeps_everything(cluster, lab):
    hosts, directory, _ = cluster
    new_mam = pinned(lab, directory, NEW, mam=True)
    before = items(lab, hosts[0])
    since = time.time()
    out = fab_with(new_mam, "upgrade").stdout
    assert f"cluster: {len(hosts)} nodes on ejabberd {NEW} (healthy)" in out, out
    assert "outage: " in out and "s with no node serving" in out, out
    outage = float(out.split("outage: ")[1].split("s ")[0])
    assert 0 < outage < 120, out
    assert f"[{hosts[0]}] start, held until every copy is loaded: ok" in out
    assert versions(lab) == {h: NEW for h in hosts}
    assert_everything_everywhere(lab, hosts, before)
    for h in hosts:
        assert attributes(lab, h, "archive_msg")[-1] == "origin_id"
        assert unit_state(lab, h) == ("active", "enabled")
        restarts = ssh(lab, h, "systemctl show ejabberd -p NRestarts --value").stdout.strip()
        assert restarts == "0", f"{h}: systemd restarted ejabberd {restarts} times"
        trouble = ssh(lab, h, f"journalctl -u ejabberd --since @{int(since)} --no-pager -o cat | "
                              "grep -E 'Failed with result|Scheduled restart' || true").stdout.strip()
        assert not trouble, f"{h}: {trouble}"
    assert "smoke: PASS" in fab_with(new_mam, "smoke").stdout
    assert "no changes: the cluster matches the inventory" in fab_with(new_mam, "deploy").stdout
