"""Failover and the runbooks, on the lab with users, roster data and real XMPP clients: any node
killed, a host powered off, a full outage, a partition, a rolling restart, a restore. Runs after
test_membership on the same lab (whatever hosts the lab's inventory holds by then).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time

import pytest
import yaml

import xmpp
from easycluster import nodectl
from easycluster.inventory import load_inventory
from easycluster.remote import Fleet
from easycluster.xmpp import Client, connect
from conftest import FAB, REPO, fab, node_eval, pinned_version, ssh
from traffic import Traffic

PASSWORD = "failover-pw"
USERS = [f"fo{i}" for i in range(6)]


def domain(lab) -> str:
    return f"{lab.name}.test"


def jid(lab, user: str) -> str:
    return f"{user}@{domain(lab)}"


def status() -> tuple[int, dict]:
    proc = fab("status", "--json", "--tables", check=False)
    return proc.returncode, json.loads(proc.stdout)


def wait_status(ready, bound: float = 120, what: str = "ready") -> dict:
    deadline = time.monotonic() + bound
    while True:
        rc, st = status()
        if ready(rc, st):
            return st
        assert time.monotonic() < deadline, f"not {what} within {bound}s: {st['problems']}"
        time.sleep(1)


def wait_healthy(bound: float = 120) -> dict:
    return wait_status(lambda rc, st: rc == 0 and st["healthy"], bound, "healthy")


def users_on(lab, host: str) -> set[str]:
    return set(ssh(lab, host, f"ejabberdctl registered_users {domain(lab)}").stdout.split())


def assert_no_user_lost(lab, hosts: list[str], expected: set[str]) -> None:
    for h in hosts:
        assert users_on(lab, h) == expected, f"users on {h} differ"


def start_node(lab, host: str) -> None:
    """As an operator would, through the unit; no toolkit command."""
    ssh(lab, host, "systemctl start --no-block ejabberd")


def restarts(lab, host: str) -> int:
    return int(ssh(lab, host, "systemctl show ejabberd -p NRestarts --value").stdout.strip())


@pytest.fixture(scope="module")
def cluster(lab):
    """The lab's cluster, healthy, with users and roster items; returns (hosts, every user)."""
    fab("deploy", timeout=600)
    hosts = [n["host"] for n in yaml.safe_load(lab.inventory.read_text())["nodes"]]
    d = domain(lab)
    script = "; ".join(f"ejabberdctl register {u} {d} {PASSWORD} >/dev/null" for u in USERS)
    script += "; " + "; ".join(f"ejabberdctl add_rosteritem {USERS[0]} {d} {u} {d} {u} friends both"
                               for u in USERS[1:])
    ssh(lab, hosts[0], script)
    time.sleep(3)   # a write followed at once by a kill can be lost (disc log dump)
    wait_healthy()
    return hosts, users_on(lab, hosts[0])


def can_talk(lab, via_a: str, via_b: str) -> None:
    """A user logged in through node a messages a user logged in through node b."""
    assert xmpp.can_login(lab.ip(via_a), jid(lab, USERS[1]), PASSWORD), f"no login via {via_a}"
    latency = xmpp.send_and_receive((lab.ip(via_a), jid(lab, USERS[1]), PASSWORD),
                                    (lab.ip(via_b), jid(lab, USERS[2]), PASSWORD), f"via {via_a} to {via_b}")
    assert latency < 5


def test_status_json_reports_each_node_and_the_replica_matrix(cluster, lab):
    hosts, _ = cluster
    st = wait_healthy()
    assert st["partitioned"] is False and st["problems"] == []
    names = sorted(f"ejabberd@{h}" for h in hosts)
    for n in st["nodes"]:
        assert n["reachable"] and n["running"] and n["member"] and n["master"]
        assert sorted(n["seen_running_by"]) == names and sorted(n["running_db_nodes"]) == names
        assert n["ejabberd_version"] == pinned_version(lab) and n["plugin_version"]
        # the lab's hosts run Debian 13: OTP 27, as the node itself and the package say
        assert n["os_release"] == "Debian 13 (trixie)" and n["otp_release"] == "27", n
        assert n["erlang_version"].startswith("1:27."), n
        assert n["sessions"] == 0
    assert set(st["tables"]["passwd"]) == set(names)
    assert set(st["tables"]["passwd"].values()) == {"disc_only_copies"}
    text = fab("status", "--tables").stdout
    assert "cluster: healthy" in text and "passwd" in text
    assert f"Debian 13 {pinned_version(lab)} OTP 27." in text, text


def test_smoke_logs_in_everywhere_and_cleans_up(cluster, lab):
    hosts, everyone = cluster
    out = fab("smoke").stdout
    n = len(hosts)
    assert f"smoke: PASS ({n} nodes, {n * (n - 1)}/{n * (n - 1)} messages delivered)" in out, out
    assert out.count("delivered ") == n * (n - 1)
    assert users_on(lab, hosts[0]) == everyone, "smoke left users behind"


def test_a_node_killed_and_kept_down_the_others_serve_and_it_rejoins_when_started(cluster, lab):
    """A node that dies and stays down (killed, then its unit stopped, as an operator holding it
    down would): the others serve, longer than net_ticktime, and it rejoins once started."""
    hosts, everyone = cluster
    victim, others = hosts[0], hosts[1:]
    ssh(lab, victim, "systemctl kill -s KILL ejabberd; systemctl stop ejabberd")
    st = wait_status(lambda rc, st: rc == 1 and not next(
        n for n in st["nodes"] if n["host"] == victim)["running"], 30, f"{victim} reported down")
    # stopped after the kill: inactive, or failed (result signal) when systemd saw the kill first
    mine = [p for p in st["problems"] if p.startswith(f"ejabberd@{victim}: ")]
    assert mine and ("not running" in mine[0] or "failed (failed (failed) result signal)" in mine[0]), mine
    can_talk(lab, others[0], others[-1])
    assert "smoke: FAIL" in fab("smoke", check=False).stdout   # a node down fails the smoke test
    # longer than net_ticktime (15 s in the lab): the survivors must not drop each other
    # (seen when nodes disagreed on the tick: the two others split 17 s after a kill)
    time.sleep(20)
    rc, st = status()
    assert not st["partitioned"], st["problems"]
    for n in st["nodes"]:
        if n["host"] != victim:
            assert sorted(n["running_db_nodes"]) == sorted(f"ejabberd@{h}" for h in others)
    start_node(lab, victim)
    wait_healthy()
    assert_no_user_lost(lab, hosts, everyone)


def test_any_node_killed_is_back_through_systemd_alone(cluster, lab):
    """kill -9 of a node's VM: Restart=on-failure starts it again 5 s later (RestartSec), and it
    rejoins with every table, with no command from anyone."""
    hosts, everyone = cluster
    for victim in hosts:
        others = [h for h in hosts if h != victim]
        before = restarts(lab, victim)
        ssh(lab, victim, "pkill -9 -u ejabberd -f beam")
        st = wait_status(lambda rc, st: rc == 1, 10, f"{victim} reported down")
        assert any(p.startswith(f"ejabberd@{victim}: ") for p in st["problems"]), st["problems"]
        can_talk(lab, others[0], others[-1])
        wait_healthy(60)
        assert restarts(lab, victim) == before + 1, "systemd did not restart it, or more than once"
        assert_no_user_lost(lab, hosts, everyone)


def test_a_powered_off_host_boots_back_into_the_cluster(cluster, lab):
    hosts, everyone = cluster
    victim = hosts[1]
    fab("lab.poweroff", "--host", victim)
    st = wait_status(lambda rc, st: rc == 1, 30, "unhealthy")
    assert f"{victim}: unreachable over SSH" in st["problems"]
    can_talk(lab, hosts[0], hosts[-1])
    fab("lab.boot", "--host", victim)   # its systemd starts ejabberd (enabled), as on a rebooted server
    wait_healthy()
    assert_no_user_lost(lab, hosts, everyone)


def test_a_full_outage_then_start_cluster(cluster, lab):
    hosts, everyone = cluster
    for h in reversed(hosts):           # power goes, host after host
        fab("lab.poweroff", "--host", h)
    for h in hosts:                     # ...and comes back in another order
        fab("lab.boot", "--host", h)
    out = fab("start-cluster", "--wait", "120").stdout
    assert "cluster: healthy" in out, out
    assert_no_user_lost(lab, hosts, everyone)


def test_stop_cluster_then_a_host_never_comes_back(cluster, lab):
    hosts, everyone = cluster
    out = fab("stop-cluster").stdout
    last = f"ejabberd@{hosts[0]}"
    assert f"{last} stopped last" in out, out
    fab("lab.poweroff", "--host", hosts[0])       # the one holding the newest data is lost
    # the others cannot load without it: said at once, not after the whole --wait (it would be
    # "did not come back within 600s")
    stuck = fab("start-cluster", "--wait", "600", check=False)
    assert stuck.returncode == 1
    assert f"the cluster cannot come back whole ({hosts[0]} cannot start" in stuck.stderr, stuck.stderr
    assert f"{last}: unreachable over SSH" in stuck.stderr, stuck.stderr
    assert "waits for tables" in stuck.stderr and f"stopped {last} last" in stuck.stderr
    assert f"`fab start-cluster --without {hosts[0]}`" in stuck.stderr, stuck.stderr
    out = fab("start-cluster", "--without", hosts[0], check=False).stdout
    assert f"nodes run without {last}" in out and f"`fab forget-node --host {hosts[0]}`" in out, out
    for h in hosts[1:]:
        assert users_on(lab, h) == everyone
    can_talk(lab, hosts[1], hosts[-1])
    fab("lab.boot", "--host", hosts[0])           # it came back after all: it rejoins by itself
    wait_healthy()
    assert_no_user_lost(lab, hosts, everyone)


def test_a_bad_link_loses_packets_at_random_and_its_end_restores_it(cluster, lab):
    """make soak's bad link (Lab.impair_link): some packets to and from the host lost, not all;
    clear_link counts what it dropped and leaves a clean link."""
    hosts, _ = cluster
    near, far = hosts[0], hosts[-1]

    def received(count: int) -> int:
        out = lab.exec(near, f"ping -c {count} -i 0.01 -W 1 -q {lab.ip(far)} || true").stdout
        return int(out.split(" packets transmitted, ")[1].split()[0])

    lab.impair_link(far, loss=30)
    try:
        through = received(200)
    finally:
        dropped = lab.clear_link(far)
    assert 0 < through < 180 and dropped > 0, (through, dropped)
    assert received(100) == 100
    assert lab.clear_link(far) == 0          # nothing left to undo


def test_a_partition_is_seen_and_healed_keeping_the_winners_writes(cluster, lab, request):
    hosts, everyone = cluster
    winner, loser = hosts[0], hosts[-1]
    d = domain(lab)

    def sees(host: str, inside: bool = False) -> str:
        cmd = "ejabberdctl list_cluster"
        return lab.exec(host, cmd).stdout if inside else ssh(lab, host, cmd).stdout

    def offline(host: str) -> int:
        return int(ssh(lab, host, f"ejabberdctl get_offline_count {USERS[1]} {d}").stdout.strip())

    def offline_of(user: str) -> int:
        return int(ssh(lab, winner, f"ejabberdctl get_offline_count {user} {d}").stdout.strip())

    waiting, waiting_online = offline(winner), offline_of(USERS[2])
    held = Online(lab.ip(loser), jid(lab, USERS[2]), PASSWORD)     # a session on the loser's side
    request.addfinalizer(held.close)   # also if the test fails: a session left behind takes the next test's messages
    fab("lab.partition", "--host", loser)
    # at once, while the winner still counts the loser as up: routed to that session, over a
    # link that is cut. Kept by the winner's courier, routed again (offline) once the loser is down.
    ssh(lab, winner, f"ejabberdctl send_message chat {USERS[0]}@{d} {USERS[2]}@{d} '' 'routed across the cut'")
    try:
        for host, other, inside in ((winner, loser, False), (loser, winner, True)):
            # net_ticktime is 15 in the lab: a silent peer is down after 15-18.75 s, also for a
            # node started less than a minute ago (lab1 was rebooted by the test before): it
            # booted at 15 (before, at Erlang's 60 until ejabberd set 15: up to ~75 s)
            deadline = time.monotonic() + 40
            while f"ejabberd@{other}" in sees(host, inside):
                assert time.monotonic() < deadline, f"{host} never noticed the partition"
                time.sleep(1)
        ssh(lab, winner, f"ejabberdctl register winnerside {d} pw")
        lab.exec(loser, f"ejabberdctl register loserside {d} pw")
        # a message for an offline user, stored on the losing side only: the heal must carry it
        lab.exec(loser, f"ejabberdctl send_message chat {USERS[0]}@{d} {USERS[1]}@{d} '' 'sent during the partition'")
    finally:
        fab("lab.heal-link", "--host", loser)
    try:
        assert "PARTITIONED" in fab("status", check=False).stdout
        # Mnesia reports the partition (kept by the plugin) once the nodes connect again, which any
        # traffic between them does: here, a ping from the winner's node
        node_eval(lab, winner, f"net_adm:ping('ejabberd@{loser}')")
        wait_status(lambda rc, st: f"ejabberd@{loser}" in next(
            n for n in st["nodes"] if n["host"] == winner)["partitioned_with"], 60, "reported by Mnesia")
        refused = fab("heal", check=False)
        assert refused.returncode == 1 and "name the side whose data is kept" in refused.stderr
    finally:   # heal whatever happened: the tests after this one need one cluster
        out = fab("heal", "--winner", winner).stdout
        kept = users_on(lab, winner)
        ssh(lab, winner, f"ejabberdctl unregister winnerside {d}")
    assert f"[{loser}] master setting cleared: ok" in out and "cluster: healthy" in out, out
    assert f"[{loser}] 1 of them stored again" in out, out
    assert offline(winner) == offline(loser) == waiting + 1
    held.close()
    assert offline_of(USERS[2]) == waiting_online + 1, "the message routed across the cut was lost"
    backup = out.split(f"[{loser}] Mnesia backup: ")[1].split()[0]
    st = wait_healthy()
    assert all(not n["master_nodes"] for n in st["nodes"])
    assert kept == everyone | {"winnerside"}   # the loser's write is gone...
    assert ssh(lab, loser, f"grep -c loserside {backup}").stdout.strip() != "0"   # ...kept in its backup
    assert "nothing to heal" in fab("heal", "--winner", winner).stdout   # idempotent


class Online:
    """A client logged in at `address`, in a thread of its own, until closed."""

    def __init__(self, address: str, user_jid: str, password: str):
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.client = Client(user_jid, password)
            self.loop.run_until_complete(connect(self.client, address, 5222))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(30), f"{user_jid} could not log in at {address}"

    def close(self) -> None:
        if not self.thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.client.disconnect)
        time.sleep(0.5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_rolling_restart_keeps_every_message_sent_to_a_node_that_is_up(cluster, lab):
    hosts, everyone = cluster
    before = {n["host"]: n for n in status()[1]["nodes"]}
    since = int(time.time())
    endpoints = [(lab.ip(h), jid(lab, USERS[i % len(USERS)])) for i, h in enumerate(hosts)]
    with Traffic(endpoints, PASSWORD) as traffic:
        time.sleep(2)
        out = fab("rolling-restart", "--drain", "1", timeout=600).stdout
        time.sleep(2)
        traffic.settle()
        # one session per client: none left behind by a reconnection given up on
        sessions = ssh(lab, hosts[0], "ejabberdctl connected_users").stdout.split()
        assert len(sessions) == len(hosts), sessions
    assert "cluster: healthy" in out, out
    # each node but the last was given time to finish its start's work before the next went
    settled = [l for l in out.splitlines() if "settled (its start's work done): ok" in l]
    assert [l[:6] for l in settled] == [f"[{h}]" for h in hosts[:-1]], out
    checked, lost = traffic.accounting()
    assert len(checked) > 20 * len(hosts), f"too little traffic to judge: {len(checked)} messages"
    assert not lost, f"{len(lost)} of {len(checked)} messages lost, e.g. {lost[:3]}"
    for e in traffic.endpoints:   # each client was cut off once: when its own node restarted
        assert len(e.sessions) == 2, f"{e.jid} had {len(e.sessions)} sessions"
    st = wait_healthy()
    for n in st["nodes"]:
        assert n["started_at"] != before[n["host"]]["started_at"], f"{n['host']} was not restarted"
    assert_no_user_lost(lab, hosts, everyone)
    # each stop was the unit's one signal, handled by the plugin (no ejabberdctl VM, no code
    # unloading): ejabberd stopped, then Mnesia closed its files, then the VM halted
    for h in hosts:
        journal = ssh(lab, h, f"journalctl -u ejabberd --since @{since} --no-pager -o cat").stdout
        sigterm = journal.find("SIGTERM received: ejabberd and Mnesia stop, then the VM halts")
        stopped = journal.find(" is stopped in the node ", sigterm)
        assert -1 < sigterm < stopped < journal.find("Mnesia stopped (ok): the VM halts", stopped), journal[-3000:]
    # each node booted at the cluster's net_ticktime (15 in the lab), not at Erlang's 60 set to 15
    # by ejabberd once its tables were loaded ({ongoing_change_to, 15} for a minute): booted at
    # 60, a node reloading a million users was counted down by its peers (docs/performance.md)
    for h in hosts:
        assert node_eval(lab, h, "net_kernel:get_net_ticktime()") == "15", h


def test_a_node_is_settled_only_once_its_vm_is_no_longer_busy(cluster, lab):
    """nodectl.wait_settled (the rolling restart's pause between nodes) waits while the VM works:
    a process spinning for 4 s inside lab1's node keeps it from settling until it ends."""
    hosts, _ = cluster
    inv = load_inventory(lab.inventory)
    with Fleet(inv) as fleet:
        assert nodectl.wait_settled(fleet[hosts[0]])[0], "an idle node did not settle"
        node_eval(lab, hosts[0], "spawn(fun() -> E = erlang:monotonic_time(millisecond) + 4000, "
                                 "Spin = fun S() -> case erlang:monotonic_time(millisecond) < E of "
                                 "true -> S(); false -> ok end end, Spin() end), ok")
        t0 = time.monotonic()
        settled, pct = nodectl.wait_settled(fleet[hosts[0]])
        waited = time.monotonic() - t0
    assert settled and pct < nodectl.SETTLED_PCT
    assert waited > 2, f"settled after {waited:.1f}s while a process spun for 4 s"


def test_restore_asks_first_then_brings_every_node_back_to_the_backup(cluster, lab):
    hosts, everyone = cluster
    d = domain(lab)
    path = fab("backup").stdout.split("Mnesia backup: ")[1].split()[0]
    for _ in range(4):      # ours is now the oldest one kept: the restore's own backup must spare it
        fab("backup")
    ssh(lab, hosts[-1], f"ejabberdctl register latecomer {d} pw; ejabberdctl unregister {USERS[5]} {d}")
    changed = (everyone - {USERS[5]}) | {"latecomer"}
    refused = subprocess.run([str(FAB), "restore", "--backup", path], cwd=REPO, input="y\n", text=True,
                             capture_output=True, env=_env(lab), timeout=120)
    assert refused.returncode == 1 and "not confirmed" in refused.stdout + refused.stderr
    assert_no_user_lost(lab, hosts, changed)          # nothing was changed
    out = fab("restore", "--backup", path, "--yes").stdout
    assert f"verified: every node reports {len(everyone)} registered users" in out, out
    assert_no_user_lost(lab, hosts, everyone)
    roster = ssh(lab, hosts[1], f"ejabberdctl get_roster {USERS[0]} {d}").stdout
    assert all(f"{u}@{d}" in roster for u in USERS[1:]), roster


def _env(lab) -> dict:
    return {**os.environ, "EASYCLUSTER_LAB": lab.name, "EASYCLUSTER_INVENTORY": str(lab.inventory)}
