"""`make load`: no message lost while the cluster is operated under real XMPP traffic.

A lab of its own: 3 masters (lab1..lab3) and a 4th host for add-master/remove-node. LOAD_USERS
real XMPP clients (slixmpp, default 500) stay logged in across the nodes and chat: together
LOAD_RATE messages a second (default 100), each from a random connected user to a random user,
connected or not. Meanwhile the operations run one after another: rolling-restart (LOAD_RUNS
times, default 10), add-master, remove-node, kill -9 of a node, host poweroff and boot,
rotate-cookie, a partition and its heal, `fab upgrade` 23.01 -> 24.12 (rolling), back to 23.01
(rolling), 23.01 -> 24.12 with the archive on (a planned full stop, its outage measured), and
the OS move to Debian 13 with its build of 24.12 pinned (each host moved and rebooted in turn),
and then 26.07 from trixie-backports (a planned full stop: passwd's key changes at 25.03).

Why slixmpp and not Tsung: Tsung drives load, but it cannot tell which message arrived; the
claim here is about every single message. Each one has a unique body and is counted exactly
once: sent (and acknowledged by the server: the clients use stream management, XEP-0198, and a
message the server never acknowledged is sent again by its client on its next session, as the
XEP asks), delivered live or from offline storage at the receiver's next login, bounced to its
sender with its reason (an error stanza: the condition is counted, e.g. resource-constraint for a
full offline storage), lost (neither, by the end: unaccounted), or delivered twice. Clients
reconnect by themselves, to the next node.

The lab's hosts run Debian 13 (trixie) unless LOAD_RELEASE (or EASYCLUSTER_LAB_RELEASE) says
bookworm. The upgrades are Debian 12's (23.01 -> 24.12 from its backports): on Debian 13 they
are left out (its 24.12 -> 26.07 is another upgrade, with a passwd transform).

Results: printed, and written into docs/reliability.md between the release's LOAD markers.
Bounded: traffic only to lab addresses; every operation has a time limit; MAX_SECONDS overall.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml
import logging

REPO = Path(__file__).resolve().parent.parent

from easycluster_lab import Lab
from easycluster_lab.report import release_name, write_between
from easycluster_lab.writes import Registrations
from easycluster.xmpp import Client, connect

LAB = os.environ.get("LOAD_LAB", "load")
USERS = int(os.environ.get("LOAD_USERS", "500"))
RATE = float(os.environ.get("LOAD_RATE", "100"))
RUNS = int(os.environ.get("LOAD_RUNS", "10"))
ONLY = [o for o in os.environ.get("LOAD_OPS", "").split(",") if o]
REUSE = os.environ.get("LOAD_REUSE") == "1"   # a lab left up by LOAD_KEEP=1: no fresh setup
KEEP = os.environ.get("LOAD_KEEP") == "1"
SETTLE = 10             # seconds of traffic after each operation, before the next one
MAX_SECONDS = 3600
PASSWORD = "load-pw"
FAB = Path(sys.executable).parent / "fab"
DOC = REPO / "docs" / "reliability.md"
MEMBERS = ["lab1", "lab2", "lab3"]
SPARE = "lab4"
RELEASE = os.environ.get("LOAD_RELEASE") or os.environ.get("EASYCLUSTER_LAB_RELEASE") or "trixie"
# LOAD_DATABASE=replicated: the cluster's data in a replicated PostgreSQL (cluster.database.hosts:
# Patroni, etcd) on lab5..lab7, and the database primary's power cut as an operation
DATABASE = os.environ.get("LOAD_DATABASE", "")
DB_HOSTS = ["lab5", "lab6", "lab7"]
# LOAD_MONITORING=1: cluster.monitoring on one more host (Prometheus, Alertmanager); every alert
# that fires is matched to the operation under way, and must be about what it did; the first
# rolling restart's sessions per node, as Prometheus recorded them, are drawn (docs/monitoring-rolling-restart.png)
MONITORING = os.environ.get("LOAD_MONITORING") == "1"
MONITOR = f"lab{5 + (len(DB_HOSTS) if DATABASE else 0)}"
ALERT_AFTER, SCRAPE = 15, 5
PICTURE = REPO / "docs" / "monitoring-rolling-restart.png"
OLD, NEW = "23.01-1", "24.12-3~bpo12+1"     # `fab upgrade`'s versions: Debian 12's and its backport
DEB13 = "24.12-3+deb13u2"                   # Debian 13's build of 24.12: `fab upgrade` moves the OS
BPO13 = "26.07-1~bpo13+1"                   # then trixie-backports' 26.07: a full stop (passwd's key)


logging.getLogger("asyncio").setLevel(logging.CRITICAL)   # slixmpp's tasks of closed streams


def log(msg: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Message:
    body: str
    sender: str
    receiver: str
    at: float
    phase: str
    acked: bool = False
    sends: int = 1


@dataclass
class User:
    name: str
    jid: str
    next_node: int
    client: Client | None = None
    sessions: list[list] = field(default_factory=list)   # [start, end (inf while up), host]
    unacked: list[Message] = field(default_factory=list)        # to send again next session
    moving: bool = False

    def down_during(self, start: float, end: float) -> float:
        """Seconds of [start, end] this user had no session."""
        up = 0.0
        for s, e, _host in self.sessions:
            up += max(0.0, min(e, end) - max(s, start))
        return max(0.0, (end - start) - up)


class LoadClient(Client):
    def __init__(self, user: User, probe: "Probe"):
        super().__init__(user.jid, PASSWORD, stream_management=True)
        self.user, self.probe = user, probe
        self.pending: dict[str, Message] = {}      # sent in this session, not yet acknowledged
        self.sm_ready = asyncio.get_event_loop().create_future()
        self.add_event_handler("sm_enabled", lambda _e: self.sm_ready.done() or self.sm_ready.set_result(True))
        self.add_event_handler("stanza_acked", self._acked)
        self.add_event_handler("message_error", self._bounced)

    def _bounced(self, msg) -> None:            # a message of ours back as an error: its reason
        if msg["body"]:
            self.probe.bounced[msg["body"]] = msg["error"]["condition"] or "error"

    def _message(self, msg) -> None:            # replaces Client's inbox: count, keep nothing
        if msg["type"] == "chat" and msg["body"]:
            self.probe.delivered(msg["body"])

    def _acked(self, stanza) -> None:
        m = self.pending.pop(stanza["body"], None) if stanza.name == "message" else None
        if m is not None:
            m.acked = True

    def send_chat(self, m: Message) -> None:
        self.pending[m.body] = m
        self.send_message(mto=m.receiver, mbody=m.body, mtype="chat")
        self.request_ack()


class Probe:
    """USERS clients chatting across the cluster, every message counted (see the module's
    docstring). The tests' tests/traffic.py is a different instrument, for a different claim
    (its docstring says how); both share easycluster.xmpp's Client and connect."""

    def __init__(self, users: list[str], domain: str, addresses: dict[str, str]):
        self.addresses = dict(addresses)          # host -> address: where clients may connect
        self.users = [User(u, f"{u}@{domain}", i) for i, u in enumerate(users)]
        self.by_jid = {u.jid: u for u in self.users}
        self.sent: dict[str, Message] = {}
        self.received: dict[str, int] = {}
        self.bounced: dict[str, str] = {}           # body -> the error's condition
        self.phase = "warm-up"
        self.phase_starts: dict[str, float] = {}
        self.stop = asyncio.Event()
        self.seq = itertools.count(1)

    def delivered(self, body: str) -> None:
        self.received[body] = self.received.get(body, 0) + 1

    def move(self, count: int, host: str) -> None:
        """`count` connected users log out and in again at `host` (as a load balancer would
        send new logins to a new node). Called from another thread."""
        hosts = sorted(self.addresses)
        movers = random.sample([u for u in self.users if u.client is not None], count)
        for u in movers:
            u.next_node, u.moving = hosts.index(host) - 1, True    # the reconnect adds 1: at `host`
            client = u.client
            if client is not None:
                self.loop.call_soon_threadsafe(client.disconnect)

    def connected(self) -> int:
        return sum(1 for u in self.users if u.client is not None)

    async def run_clients(self) -> None:
        self.loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(self._keep_connected(u)) for u in self.users]
        tasks.append(asyncio.create_task(self._chat()))
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        for u in self.users:
            if u.client:
                u.client.disconnect()
        await asyncio.sleep(1)

    async def _keep_connected(self, u: User) -> None:
        await asyncio.sleep(random.random() * 5)        # not 500 logins in the same instant
        while True:
            hosts = sorted(self.addresses)
            host = hosts[u.next_node % len(hosts)]
            address = self.addresses[host]
            client = LoadClient(u, self)
            lost = asyncio.get_running_loop().create_future()
            client.add_event_handler("disconnected", lambda _e, f=lost: f.done() or f.set_result(True))
            try:
                await connect(client, address, 5222)
                await asyncio.wait_for(client.sm_ready, 10)
            except (AssertionError, asyncio.TimeoutError, OSError):
                client.abort()
                u.next_node += random.randrange(1, len(hosts)) if len(hosts) > 1 else 0
                await asyncio.sleep(0.5 + random.random())
                continue
            u.client = client
            u.sessions.append([time.monotonic(), float("inf"), host])
            again, u.unacked = u.unacked, []
            for m in again:              # never acknowledged by the server: sent once more
                m.sends += 1
                client.send_chat(m)
            await lost
            u.sessions[-1][1] = time.monotonic()
            u.client = None
            u.unacked.extend(client.pending.values())
            u.next_node += 1 if u.moving else random.randrange(1, 4)   # another of the service's addresses
            u.moving = False
            await asyncio.sleep(0.2 + random.random() * 0.8)

    async def _chat(self) -> None:
        tick = 0.1
        while True:
            up = [u for u in self.users if u.client is not None]
            n = int(RATE * tick) + (1 if random.random() < (RATE * tick) % 1 else 0)
            for _ in range(n if up else 0):
                s = random.choice(up)
                r = random.choice(self.users)
                if r is s or s.client is None:
                    continue
                m = Message(f"load {next(self.seq)} {s.name}>{r.name}", s.jid, r.jid, time.monotonic(), self.phase)
                self.sent[m.body] = m
                s.client.send_chat(m)
            await asyncio.sleep(tick)

    # ------------------------------------------------------------------ accounting
    def report(self, phase: str, start: float, end: float) -> dict:
        msgs = [m for m in self.sent.values() if m.phase == phase]
        lost = [m for m in msgs if m.body not in self.received and m.body not in self.bounced]
        bounced = [self.bounced[m.body] for m in msgs if m.body not in self.received and m.body in self.bounced]
        gaps = sorted(u.down_during(start, end) for u in self.users)
        return {"operation": phase, "users": len(self.users), "sent": len(msgs),
                "lost": len(lost), "bounced": len(bounced),
                "bounced_by_reason": {r: bounced.count(r) for r in sorted(set(bounced))}, "duplicates": sum(1 for m in msgs if self.received.get(m.body, 0) > 1),
                "resent": sum(1 for m in msgs if m.sends > 1),
                "no_service_p50": _pct(gaps, 50), "no_service_p99": _pct(gaps, 99),
                "duration": end - start, "lost_examples": [self.explain(m) for m in lost[:5]],
                "lost_by_path": self.paths(lost)}

    def host_at(self, jid: str, at: float) -> str:
        return next((h for s, e, h in self.by_jid[jid].sessions if s <= at <= e), "away")

    def paths(self, lost: list[Message]) -> dict[str, int]:
        """Lost messages by sender's host -> receiver's host at the send, and 5 s bucket."""
        found: dict[str, int] = {}
        for m in lost:
            key = (f"{self.host_at(m.sender, m.at)}->{self.host_at(m.receiver, m.at)} "
                   f"+{int((m.at - self.phase_starts.get(m.phase, m.at)) // 5) * 5}s")
            found[key] = found.get(key, 0) + 1
        return dict(sorted(found.items()))

    def explain(self, m: Message) -> str:
        """A lost message and where its ends were: session spans relative to the send."""
        def spans(jid: str) -> str:
            return " ".join(f"{h}[{s - m.at:+.2f},{e - m.at:+.2f}]" for s, e, h in self.by_jid[jid].sessions
                            if e > m.at - 5 and s < m.at + 30)
        return (f"{m.body!r} at +{m.at - self.phase_starts.get(m.phase, m.at):.2f}s acked={m.acked} sends={m.sends} sender {spans(m.sender)} "
                f"receiver {spans(m.receiver)}")


def _pct(values: list[float], p: int) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class AlertWatch(threading.Thread):
    """LOAD_MONITORING: the alerts Prometheus holds (pending or firing), polled every 5 s; each
    kept once, by its labels and the moment its condition began (activeAt), with whether it
    ever fired."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.url, self.done, self.seen = f"http://{address}:9090", threading.Event(), {}

    def query(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.load(r)

    def run(self) -> None:
        while not self.done.wait(5):
            try:
                alerts = self.query("/api/v1/alerts")["data"]["alerts"]
            except (OSError, ValueError):
                continue
            for a in alerts:
                key = (a["activeAt"], tuple(sorted(a["labels"].items())))
                was = self.seen.get(key)
                self.seen[key] = {"labels": a["labels"], "since": _wall(a["activeAt"]),
                                  "fired": (was or {}).get("fired", False) or a["state"] == "firing"}

    def fired(self) -> list[dict]:
        return sorted((a for a in self.seen.values() if a["fired"]), key=lambda a: a["since"])


def _wall(rfc3339: str) -> float:
    """Prometheus's times ("2026-12-07T15:43:13.249123456Z": UTC) in Unix seconds."""
    head, _, fraction = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + (float("0." + fraction) if fraction else 0.0)


def about(alert: dict, targets: list[str]) -> bool:
    """Whether an alert names one of the hosts an operation worked on (its host, or a peer seen
    not running), or is the database's during a database operation (targets: DB_HOSTS)."""
    labels = alert["labels"]
    if labels.get("host") in targets or any(labels.get("peer", "").endswith(f"@{t}") for t in targets):
        return True
    return set(targets) == set(DB_HOSTS) and labels.get("alertname", "").startswith("EasyclusterDatabase")


def targets_of(operation: str) -> list[str]:
    """The hosts an operation of make load works on (its alerts may name them)."""
    for prefix, hosts in (("rolling-restart", MEMBERS), ("add-master", [SPARE]), ("remove-node", [SPARE]),
                          ("kill -9", ["lab2"]), ("poweroff", ["lab3"]), ("partition", ["lab3"]),
                          ("upgrade", MEMBERS), ("back to", MEMBERS), ("OS move", MEMBERS), ("database", DB_HOSTS)):
        if operation.startswith(prefix):
            return hosts
    return []


class Load:
    def __init__(self) -> None:
        self.lab = Lab(LAB)
        self.dir = self.lab.dir
        self.inv3 = self.dir / "load-3.yml"
        self.inv4 = self.dir / "load-4.yml"
        self.current = self.inv3                  # the inventory of the cluster as it is now
        self.results: list[dict] = []
        self.outages: list[float] = []            # full-stop upgrades: seconds no node served
        self.db_outcomes: list[tuple] = []        # the database's faults: (Outcome, primary moved, settled in s)
        self.domain = f"{LAB}.test"
        self.alerts: list[tuple[str, list[dict], list[dict]]] = []   # per operation: (name, about it, other)
        self.picture = ""

    # ---------------------------------------------------------------- commands
    def env(self, inventory: Path | None = None) -> dict:
        """fab's environment: this lab, the cluster's inventory as it is now."""
        return {**os.environ, "EASYCLUSTER_LAB": LAB, "EASYCLUSTER_INVENTORY": str(inventory or self.current)}

    def fab(self, *args: str, inventory: Path | None = None, timeout: float = 600) -> float:
        t0 = time.monotonic()
        self.fab_out(*args, inventory=inventory, timeout=timeout)
        return time.monotonic() - t0

    def fab_out(self, *args: str, inventory: Path | None = None, timeout: float = 900) -> str:
        proc = subprocess.run([str(FAB), *args], cwd=REPO, env=self.env(inventory), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"fab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return proc.stdout

    def ssh(self, host: str, command: str, timeout: float = 120) -> str:
        return subprocess.run(["ssh", "-F", str(self.lab.ssh_config), host, command], check=True,
                              capture_output=True, text=True, timeout=timeout).stdout

    def wait_healthy(self, inventory: Path | None = None, limit: float = 240) -> None:
        deadline = time.monotonic() + limit
        while True:
            proc = subprocess.run([str(FAB), "status"], cwd=REPO, env=self.env(inventory), capture_output=True, text=True, timeout=120)
            if proc.returncode == 0 and "cluster: healthy" in proc.stdout:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not healthy after {limit:.0f}s:\n{proc.stdout[-2000:]}")
            time.sleep(2)

    # ---------------------------------------------------------------- setup
    def setup(self) -> list[str]:
        users = [f"u{i}" for i in range(USERS)]
        if REUSE and self.inv3.exists():
            self.wait_healthy(limit=10)
            self.register(users)
            return users
        hosts = 4 + (len(DB_HOSTS) if DATABASE else 0) + (1 if MONITORING else 0)
        log(f"lab {LAB}: {hosts} hosts")
        self.lab.up(hosts, fresh=True, release=RELEASE)
        data = yaml.safe_load(self.lab.inventory.read_text())
        # in-band registration is the database faults' write load (LOAD_DATABASE); otherwise off
        data["cluster"]["in_band_registration"] = bool(DATABASE)
        if DATABASE:
            data["cluster"]["database"] = {"type": "postgresql", "hosts": DB_HOSTS,
                                           "password_file": str(self.dir / "load-db.password")}
        if MONITORING:
            data["cluster"]["monitoring"] = {"host": MONITOR, "address": self.lab.ip(MONITOR),
                                             "alert_after": ALERT_AFTER, "scrape_interval": SCRAPE}
        for path, hosts in ((self.inv3, MEMBERS), (self.inv4, MEMBERS + [SPARE])):
            data["nodes"] = [{"host": h} for h in hosts]
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            path.chmod(0o600)
        log("deploy 3 masters")
        self.fab("deploy")
        self.register(users)
        return users

    def node_eval(self, host: str, expr: str, timeout: float = 120) -> str:
        """Erlang `expr` evaluated inside HOST's node, its value printed with ~p (Lab.node_eval)."""
        return self.lab.node_eval(host, expr, timeout)

    def register(self, users: list[str]) -> None:
        """USERS accounts in one Erlang call on lab1 (ejabberdctl would take ~0.4 s each)."""
        reg = (f"D = <<\"{self.domain}\">>, "
               f"R = [ejabberd_auth:try_register(<<\"u\", (integer_to_binary(I))/binary>>, D, <<\"{PASSWORD}\">>)"
               f" || I <- lists:seq(0, {len(users) - 1})], length([ok || ok <- R])")
        out = self.node_eval("lab1", reg)
        n = int(self.ssh("lab1", f"ejabberdctl registered_users {self.domain} | wc -l").strip())
        assert n >= len(users), f"registered {n} of {len(users)} users ({out})"
        log(f"registered {len(users)} users")

    # ---------------------------------------------------------------- operations
    def operations(self) -> list[tuple[str, callable]]:
        ops = [(f"rolling-restart #{i + 1}", lambda: self.fab("rolling-restart", "--drain", "5"))
               for i in range(RUNS)]
        ops += [("add-master", self.add_master), ("remove-node", self.remove_node),
                ("kill -9", self.kill_node), ("poweroff and boot", self.power_cycle),
                ("rotate-cookie", lambda: self.fab("rotate-cookie")),
                ("partition and heal", self.partition_heal)]
        if RELEASE == "bookworm":
            ops += [(f"upgrade to {NEW} (rolling)", lambda: self.upgrade(NEW, mam=False)),
                    (f"back to {OLD} (rolling)", lambda: self.upgrade(OLD, mam=False)),
                    (f"upgrade to {NEW} (full stop: archive on)", self.full_stop_upgrade),
                    (f"OS move to Debian 13 ({DEB13})", lambda: self.upgrade(DEB13, mam=True)),
                    (f"upgrade to {BPO13} (full stop: passwd's key)", lambda: self.upgrade(BPO13, mam=True))]
        if DATABASE:
            ops += self.database_ops()
        if ONLY:
            ops = [(n, f) for n, f in ops if any(n.startswith(o) for o in ONLY)]
        return ops

    def add_master(self) -> None:
        self.fab("add-master", "--host", SPARE, inventory=self.inv4)
        self.current = self.inv4
        self.probe.addresses[SPARE] = self.lab.ip(SPARE)
        self.probe.move(len(self.probe.users) // 4, SPARE)   # the new node takes its share of users

    def remove_node(self) -> None:
        self.probe.addresses.pop(SPARE, None)        # as the service's DNS would, first
        self.fab("remove-node", "--host", SPARE, "--drain", "5", inventory=self.inv4)
        self.current = self.inv3

    def upgrade(self, version: str, mam: bool) -> None:
        """`fab upgrade` with VERSION pinned (and the archive on or off) in the 3 masters' inventory."""
        data = yaml.safe_load(self.inv3.read_text())
        data["cluster"]["ejabberd_version"], data["cluster"]["mam"] = version, mam
        self.inv3.write_text(yaml.safe_dump(data, sort_keys=False))
        self.current = self.inv3
        out = self.fab_out("deploy" if version == OLD and mam else "upgrade")
        self.outages.extend(float(line.split()[1].rstrip("s")) for line in out.splitlines() if line.startswith("outage: "))

    def full_stop_upgrade(self) -> None:
        """The archive turned on at 23.01 (a reload: the archive_msg table appears, and fills
        with the traffic), then `fab upgrade`: its record changes in 24.02, so a full stop."""
        self.upgrade(OLD, mam=True)
        time.sleep(SETTLE)
        self.upgrade(NEW, mam=True)

    # ---- the replicated database's faults (LOAD_DATABASE=replicated), each under a stream of
    # registrations besides the chat: acknowledged ones lost, failed ones, and when every node
    # registered again (easycluster_lab.writes)
    def database_ops(self) -> list[tuple[str, callable]]:
        return [("database primary powered off", lambda: self.db_fault("primary powered off", self.db_power_cut)),
                ("database switchover", lambda: self.db_fault("planned switchover", self.db_switchover)),
                ("database primary cut off", lambda: self.db_fault("primary cut off", self.db_cut_off)),
                ("database Patroni stopped", lambda: self.db_fault("Patroni stopped on the primary",
                                                                   self.db_patroni_stopped)),
                ("database etcd member lost", lambda: self.db_fault("one etcd member lost", self.db_etcd_lost)),
                ("database primary taken out and added", lambda: self.db_fault(
                    "primary taken out (remove-database-host), then added (deploy)", self.db_take_out))]

    def db_members(self, skip: str = "") -> list[dict]:
        host = next(h for h in DB_HOSTS if h != skip)
        return json.loads(self.ssh(host, "patronictl -c /etc/patroni/config.yml list -f json"))

    def db_primary(self, skip: str = "") -> str:
        return next(m["Member"] for m in self.db_members(skip) if m["Role"].lower() == "leader")

    def db_fault(self, what: str, fault) -> None:
        """`fault(primary)` under registrations through every node; then the acknowledged ones
        looked up on the primary, and the old primary waited for as a standby."""
        old = self.db_primary()
        writes = Registrations(self.lab.ip, MEMBERS, self.domain, PASSWORD, f"db{len(self.db_outcomes)}x", 120)
        later: list[threading.Timer] = []
        outcome = writes.across(lambda: later.append(fault(old)), what)
        for timer in later:
            if timer is not None:
                timer.join()
        new = self.db_primary(skip=old)
        stored = set(self.ssh(new, "cd / && runuser -u postgres -- psql -X -q -t -A -d ejabberd -c "
                                   f"\"SELECT username FROM users WHERE username LIKE '{writes.prefix}%'\"").split())
        outcome.lost = len(writes.lost(stored))
        started = time.monotonic()
        def all_streaming() -> bool:
            listed = self.db_members(skip=old)
            return len(listed) == len(DB_HOSTS) and all(m["State"].lower() in ("streaming", "running") for m in listed)
        self.until(all_streaming, 240, "every database member streaming")
        self.db_outcomes.append((outcome, new != old, time.monotonic() - started))
        log(outcome.line())

    def db_power_cut(self, primary: str) -> threading.Timer:
        """Powered off; booted 40 s later (it must come back as a standby by itself)."""
        self.lab.poweroff(primary)
        return self.after(40, lambda: self.lab.boot(primary))

    def db_switchover(self, primary: str) -> None:
        target = next(m["Member"] for m in self.db_members() if m["Role"].lower() == "sync standby")
        self.ssh(primary, f"patronictl -c /etc/patroni/config.yml switchover --leader {primary} --candidate {target} "
                          "--force")

    def db_cut_off(self, primary: str) -> threading.Timer:
        """Its link cut; back 40 s later (demoted, it follows the new primary again)."""
        self.lab.partition(primary)
        return self.after(40, lambda: self.lab.heal_link(primary))

    def db_patroni_stopped(self, primary: str) -> threading.Timer:
        """Patroni stopped there (it stops PostgreSQL, hands over); 20 s later `fab deploy` starts it."""
        self.ssh(primary, "systemctl stop patroni")
        return self.after(20, lambda: self.fab("deploy"))

    def db_etcd_lost(self, _primary: str) -> threading.Timer:
        """etcd stopped on a standby for 30 s: nothing changes for ejabberd."""
        standby = next(m["Member"] for m in self.db_members() if m["Role"].lower() != "leader")
        self.ssh(standby, "systemctl stop etcd")
        return self.after(30, lambda: self.ssh(standby, "systemctl start etcd"))

    def db_take_out(self, primary: str) -> None:
        """`fab remove-database-host` of the primary (it hands over first), then `fab deploy`
        adds it back afresh (it is still listed)."""
        self.fab("remove-database-host", "--host", primary)
        self.fab("deploy")

    @staticmethod
    def after(seconds: float, then) -> threading.Timer:
        """`then()` in `seconds`, while the registrations go on (db_fault waits for it)."""
        timer = threading.Timer(seconds, then)
        timer.start()
        return timer

    def kill_node(self) -> None:
        self.ssh("lab2", "pkill -KILL -u ejabberd -f beam.smp")
        time.sleep(3)                                # systemd restarts it (Restart=on-failure)
        self.wait_healthy()

    def power_cycle(self) -> None:
        self.lab.poweroff("lab3")
        time.sleep(10)
        self.lab.boot("lab3")
        self.wait_healthy()

    def partition_heal(self) -> None:
        """lab3 cut off until both sides count the other as down (net_ticktime: every node boots
        at the cluster's), then the link is back and `fab heal --winner lab1`."""
        self.probe.move(len(self.probe.users) // 3, "lab3")      # users on the side that is cut off
        time.sleep(5)
        self.lab.partition("lab3")
        try:
            self.until(lambda: "ejabberd@lab3" not in self.ssh("lab1", "ejabberdctl list_cluster")
                       and "ejabberd@lab1" not in self.lab.exec("lab3", "ejabberdctl list_cluster").stdout,
                       120, "both sides of the partition to notice it")
        finally:
            self.lab.heal_link("lab3")
        self.until(lambda: "PARTITIONED" in subprocess.run([str(FAB), "status"], cwd=REPO, env=self.env(), capture_output=True,
                                                           text=True, timeout=120).stdout,
                   90, "Mnesia to report the partition")
        self.fab("heal", "--winner", "lab1")
        self.wait_healthy()

    @staticmethod
    def until(check, bound: float, what: str) -> None:
        deadline = time.monotonic() + bound
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"waited {bound:.0f}s for {what}")
            time.sleep(1)

    # ---------------------------------------------------------------- the run
    async def main(self, users: list[str]) -> None:
        self.probe = Probe(users, self.domain, {h: self.lab.ip(h) for h in MEMBERS})
        clients = asyncio.create_task(self.probe.run_clients())
        deadline = time.monotonic() + 120
        while self.probe.connected() < len(users):
            assert time.monotonic() < deadline, f"only {self.probe.connected()} of {len(users)} users logged in"
            await asyncio.sleep(1)
        log(f"{len(users)} users logged in; traffic {RATE:.0f} messages/s")
        await asyncio.sleep(SETTLE)
        log(f"warm-up: {len(self.probe.sent)} messages sent in {SETTLE}s")
        started = time.monotonic()
        windows = []
        wall = time.time() - time.monotonic()          # a monotonic time + wall: Prometheus's clock
        watch = AlertWatch(self.lab.ip(MONITOR)) if MONITORING else None
        if watch:
            watch.start()
        for name, op in self.operations():
            assert time.monotonic() - started < MAX_SECONDS, "load run over its time limit"
            t0 = time.monotonic()
            self.probe.phase, self.probe.phase_starts[name] = name, t0
            await asyncio.to_thread(op)
            t1 = time.monotonic()
            await asyncio.to_thread(self.wait_healthy)
            await asyncio.sleep(SETTLE)
            windows.append((name, t0, time.monotonic(), t1 - t0))
            log(f"{name}: {t1 - t0:.1f}s, {self.probe.connected()} users connected")
        self.probe.phase = "after the last operation"
        self.probe.phase_starts["after the last operation"] = time.monotonic()
        windows.append(("after the last operation", time.monotonic(), time.monotonic() + SETTLE, 0.0))
        deadline = time.monotonic() + 120          # everyone back, so offline messages are delivered
        while self.probe.connected() < len(users) and time.monotonic() < deadline:
            await asyncio.sleep(1)
        await asyncio.sleep(SETTLE)
        self.probe.stop.set()
        await clients
        if watch:
            watch.done.set()
            self.judge_alerts(watch, [(n, a + wall, b + wall) for n, a, b, _ in windows], started + wall)
            first = next(((a + wall, b + wall) for n, a, b, _ in windows if n.startswith("rolling-restart")), None)
            if first:
                self.picture = self.draw_rolling_restart(watch, *first)
        for name, t0, t1, duration in windows:
            r = self.probe.report(name, t0, t1)
            r["duration"] = duration
            self.results.append(r)
            log(f"{name}: sent {r['sent']}, bounced {r['bounced']} {r['bounced_by_reason']}, lost {r['lost']} "
                f"{r['lost_examples']} {r['lost_by_path']}, duplicates {r['duplicates']}, "
                f"resent {r['resent']}, no service p50 {r['no_service_p50']:.1f}s p99 {r['no_service_p99']:.1f}s")

    def judge_alerts(self, watch: AlertWatch, windows: list[tuple[str, float, float]], first: float) -> None:
        """Each alert that fired, to the operation during which its condition began: about what
        that operation did, or not (before the first operation: never about anything)."""
        for name, t0, t1 in [("before the first operation", 0.0, first)] + windows:
            began = [a for a in watch.fired() if t0 <= a["since"] < t1]
            targets = targets_of(name)
            self.alerts.append((name, [a for a in began if about(a, targets)],
                                [a for a in began if not about(a, targets)]))
        for name, ok, other in self.alerts:
            if ok or other:
                log(f"alerts during {name}: about it {[a['labels']['alertname'] for a in ok]}, "
                    f"other {[a['labels'] for a in other]}")

    def draw_rolling_restart(self, watch: AlertWatch, t0: float, t1: float) -> str:
        """docs/monitoring-rolling-restart.png: easycluster_sessions per node, as Prometheus
        recorded them, around the first rolling restart."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        q = urllib.parse.urlencode({"query": "easycluster_sessions", "start": t0 - 30, "end": t1 + 30, "step": 1})
        series = watch.query(f"/api/v1/query_range?{q}")["data"]["result"]
        fig, ax = plt.subplots(figsize=(9, 4))
        for r in sorted(series, key=lambda r: r["metric"]["host"]):
            ax.plot([float(t) - t0 for t, _ in r["values"]], [float(v) for _, v in r["values"]],
                    label=r["metric"]["host"], drawstyle="steps-post")
        ax.axvspan(0, t1 - t0, alpha=0.1, color="grey", label="fab rolling-restart --drain 5")
        ax.set_xlabel("seconds from the start of `fab rolling-restart`")
        ax.set_ylabel("client sessions (easycluster_sessions)")
        ax.set_title(f"{USERS} users across 3 masters during a rolling restart (Prometheus, {SCRAPE} s scrape)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(PICTURE, dpi=100)
        plt.close(fig)
        return str(PICTURE.relative_to(REPO))

    def write_doc(self) -> None:
        rolling = [r for r in self.results if r["operation"].startswith("rolling-restart")]
        where = f", the data in a replicated PostgreSQL ({', '.join(DB_HOSTS)})" if DATABASE else ""
        lines = [f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `make load`: {USERS} users, "
                 f"{RATE:.0f} messages/s, lab {LAB} (3 masters, systemd hosts{where}), Debian {release_name(RELEASE)}, ejabberd "
                 f"{yaml.safe_load(self.inv3.read_text())['cluster']['ejabberd_version']}.", "",
                 "| operation | users | messages sent | lost (unaccounted) | bounced (reason) | duplicates | "
                 "resent (unacked) | no service p50 | p99 | duration |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.results:
            reasons = ", ".join(f"{n} {c}" for c, n in r["bounced_by_reason"].items())
            lines.append(f"| {r['operation']} | {r['users']} | {r['sent']} | **{r['lost']}** | "
                         f"{r['bounced']}{f' ({reasons})' if reasons else ''} | {r['duplicates']} | "
                         f"{r['resent']} | {r['no_service_p50']:.1f} s | {r['no_service_p99']:.1f} s | "
                         f"{r['duration']:.1f} s |")
        if rolling:
            clean = sum(1 for r in rolling if r["lost"] == 0)
            lines += ["", f"Rolling restarts with 0 lost: **{clean} of {len(rolling)}** consecutive runs."]
        if self.db_outcomes:
            lines += ["", "The database's faults, each under a stream of in-band registrations through the nodes in "
                      "turn (besides the chat above): acknowledged ones lost, failed ones (refused or timed out: "
                      "not acknowledged), the time from the fault until every node registered again, and whether "
                      "the old primary was a streaming standby again afterwards.", "",
                      "| fault | registrations acknowledged | lost | failed | back on every node | primary moved | "
                      "every member streaming again after |",
                      "|---|---:|---:|---:|---:|---|---:|"]
            for o, moved, settled in self.db_outcomes:
                lines.append(f"| {o.what} | {o.acked} | **{o.lost}** | {o.failed} | {o.recovered:.1f} s | "
                             f"{'yes' if moved else 'no'} | {settled:.0f} s |")
        if self.outages:
            lines += ["", "Full-stop upgrade: no node served for " + ", ".join(f"**{o:.1f} s**" for o in self.outages) +
                      " (`fab upgrade`'s own measure: from the last node's stop to the first node serving again); "
                      "messages the clients could not send meanwhile are not counted as sent."]
        if self.alerts:
            other = [(n, a) for n, _, others in self.alerts for a in others]
            lines += ["", f"With a monitoring host (`LOAD_MONITORING=1`: alert_after {ALERT_AFTER} s, a {SCRAPE} s "
                      "scrape), the alerts that fired, each to the operation during which its condition began:", "",
                      "| operation | alerts about what it did | other alerts |", "|---|---|---|"]
            for name, ok, others in self.alerts:
                if ok or others:
                    lines.append(f"| {name} | {', '.join(sorted({a['labels']['alertname'] for a in ok})) or '-'} | "
                                 f"{', '.join(sorted({a['labels']['alertname'] for a in others})) or '-'} |")
            lines.append("| (every other operation) | - | - |")
            lines += ["", f"Alerts not about what an operation did: **{len(other)}**."]
            if self.picture:
                lines += ["", f"![sessions per node during a rolling restart]({Path(self.picture).name})"]
        block = "\n".join(lines)
        marker = f"LOAD {RELEASE}" + (f" {DATABASE}" if DATABASE else "") + (" monitoring" if MONITORING else "")
        write_between(DOC, f"<!-- {marker} -->", f"<!-- /{marker} -->", block)
        print(block)


def run() -> int:
    load = Load()
    users = load.setup()
    try:
        asyncio.run(load.main(users))
    finally:
        if not KEEP:
            load.lab.down(purge=False)
    load.write_doc()
    quiet = not any(others for _, _, others in load.alerts)
    return 0 if all(r["lost"] == 0 for r in load.results) and all(o.lost == 0 for o, _, _ in load.db_outcomes) \
        and quiet else 1


if __name__ == "__main__":
    sys.exit(run())
