"""`make bench`: easycluster against the bare manual runbook, on a lab of its own.

Every trial starts from the same state: hosts with the ejabberd package installed and
nothing else (the state right after `apt-get install`, saved once and put back before each
trial). Measured, each REPS times, medians reported:
  1. deploys of N = 3, 5 and 8 nodes: the manual runbook over plain ssh, one host after
     another (write config and cookie, start, wait until started; then `ejabberdctl
     join_cluster`), against `fab deploy` of the same nodes; a no-op `fab deploy` of 3;
     SSH connections per host in one `fab deploy`, counted in each host's sshd log;
     `fab deploy` of 3 masters + 4 satellites;
  2. for each data size of SIZES (10,000, 100,000 ... up to BENCH_USERS users, each with a
     roster item): `fab add-master` of a 4th node into a 3-node cluster holding them, against
     the manual way (config, start, `ejabberdctl join_cluster`) into the same, once the grown
     cluster has settled (its VMs at rest: a node that has just received a big copy rewrites
     its dets files for up to a minute); the tables' bytes, the join's records/s and MB/s, and
     what one host's disc writes (dd) for scale;
  3. at 100,000 users (or BENCH_USERS if fewer): `fab rolling-restart` of the 3 nodes, each
     node's time without service seen by a client probing its c2s port and its restart span by
     span from its journal; then cluster.storage's other layout (disc_copies) at that size:
     the conversion by `fab deploy`, a master's memory and disc in both, the same rolling
     restart, and add-master into it;
  4. at BENCH_USERS: a full Mnesia backup, `ejabberdctl backup` against the plugin's;
     `fab add-satellite` of the 4th node (against add-master's), an XMPP login and a roster
     read on a satellite against on a master (LATENCY_TRIES each, medians); if BENCH_USERS is
     more than 100,000, the rolling restart of 3. again at BENCH_USERS (restarts at scale);
  5. cluster.database: `fab add-master` of the 4th node into a 3-node cluster whose
     BENCH_USERS users and roster items live in PostgreSQL (on DB_HOST).
The lab's hosts run Debian 13 (trixie) unless BENCH_RELEASE (or EASYCLUSTER_LAB_RELEASE) says
bookworm. Results: printed, written into docs/performance.md between the release's BENCH markers,
and drawn in docs/scaling.png (Debian 13; docs/scaling-bookworm.png for Debian 12): deploy time
against N, add-master time against users.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

from easycluster.inventory import load_inventory
from easycluster_lab import Lab
from easycluster_lab.report import release_name, write_between
from easycluster.nodectl import install, wait_settled
from easycluster.paths import MNESIA_BACKUP_DIR
from easycluster.remote import Fleet
from easycluster.render import managed_files
from easycluster.secrets import load_cookie

LAB = os.environ.get("BENCH_LAB", "bench")
RELEASE = os.environ.get("BENCH_RELEASE") or os.environ.get("EASYCLUSTER_LAB_RELEASE") or "trixie"
REPS = int(os.environ.get("BENCH_REPS", "3"))
USERS = int(os.environ.get("BENCH_USERS", "100000"))
SIZES = [n for n in (10_000, 100_000, 1_000_000) if n < USERS] + [USERS]
ROLLING_USERS = min(100_000, USERS)
DEPLOY_SIZES = (3, 5, 8)
FAB = Path(sys.executable).parent / "fab"
DOC = REPO / "docs" / "performance.md"
PLOT = REPO / "docs" / ("scaling.png" if RELEASE == "trixie" else f"scaling-{RELEASE}.png")
PRISTINE = "/root/easycluster-bench-pristine.tgz"
HOSTS = [f"lab{i}" for i in range(1, 9)]
DB_HOST = "lab9"     # the database host of the cluster.database measurement (not a node)
LATENCY_TRIES = 20
DEFAULT_STORAGE, MEMORY_STORAGE = "disc_only_copies", "disc_copies"   # cluster.storage: the two layouts


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def roll_tag(users: int, storage: str = DEFAULT_STORAGE) -> str:
    """The results' key of a measurement at `users` in a layout (the default's says none)."""
    return f"{users} users" + ("" if storage == DEFAULT_STORAGE else f", {storage}")


class Prober(threading.Thread):
    """A client asking a node for service every PROBE_EVERY s: TCP connect to c2s, an XMPP
    stream header, the stream's features back within a second."""
    PROBE_EVERY = 0.1

    def __init__(self, address: str, domain: str) -> None:
        super().__init__(daemon=True)
        self.address, self.domain = address, domain
        self.seen: list[tuple[float, bool]] = []
        self.done = threading.Event()

    def probe(self) -> bool:
        header = (f"<?xml version='1.0'?><stream:stream to='{self.domain}' xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode()
        try:
            with socket.create_connection((self.address, 5222), timeout=1) as sock:
                sock.settimeout(1)
                sock.sendall(header)
                got = b""
                while b"stream:features" not in got:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    got += chunk
                return True
        except OSError:
            return False

    def run(self) -> None:
        while not self.done.is_set():
            self.seen.append((time.monotonic(), self.probe()))
            self.done.wait(self.PROBE_EVERY)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def outages(self) -> list[tuple[float, float]]:
        """(first failed probe, next answered one) for each run of failures."""
        spans, down_since = [], None
        for t, ok in self.seen:
            if not ok and down_since is None:
                down_since = t
            elif ok and down_since is not None:
                spans.append((down_since, t))
                down_since = None
        assert down_since is None, f"{self.address} was still without service at the end"
        return spans

    def longest_outage(self) -> float:
        return max((b - a for a, b in self.outages()), default=0.0)

    @staticmethod
    def all_down(probers: list["Prober"]) -> float:
        """Seconds during which no prober got an answer (the cluster without service)."""
        events = sorted([(a, 1) for p in probers for a, _ in p.outages()] +
                        [(b, -1) for p in probers for _, b in p.outages()])
        total, down, since = 0.0, 0, 0.0
        for t, step in events:
            if down == len(probers):
                total += t - since
            down += step
            since = t
        return total


class Bench:
    def __init__(self) -> None:
        self.lab = Lab(LAB)
        self.tmp = Path(tempfile.mkdtemp(prefix="easycluster-bench-"))
        self.results: dict[str, list[float]] = {}
        self.notes: dict[str, str] = {}
        self.copy_seconds: dict[int, float] = {}   # users -> passwd + roster copy time (last add-master)
        self.table_bytes = 0                        # passwd + roster files at USERS users
        self.disc_mb_s = 0.0                        # what dd writes per second on one host
        self.layout_memory: dict[str, tuple[float, float]] = {}   # storage -> a master's RSS, Mnesia dir (MiB)

    # ---------------------------------------------------------------- lab and state
    def inventory(self, hosts: list[str], satellites: tuple[str, ...] = (), sql: bool = False,
                  storage: str = DEFAULT_STORAGE) -> Path:
        data = yaml.safe_load(self.lab.inventory.read_text())
        data["nodes"] = [{"host": h, **({"role": "satellite"} if h in satellites else {})} for h in hosts]
        if sql:
            data["cluster"]["database"] = {"type": "postgresql", "host": DB_HOST,
                                           "password_file": str(self.tmp / "database.password")}
        if storage != DEFAULT_STORAGE:
            data["cluster"]["storage"] = storage
        path = self.tmp / f"inv-{len(hosts)}-{hosts[-1]}-{len(satellites)}s{'-sql' if sql else ''}-{storage}.yml"
        path.write_text(yaml.safe_dump(data))
        return path

    def ssh(self, host: str, command: str, check: bool = True, stdin: str | None = None) -> str:
        """A new ssh connection per call, as an operator typing commands makes."""
        proc = subprocess.run(["ssh", "-F", str(self.lab.ssh_config), host, command], input=stdin,
                              capture_output=True, text=True, timeout=3600)
        if check and proc.returncode != 0:
            raise RuntimeError(f"ssh {host} {command[:80]!r}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc.stdout

    def parallel(self, func, hosts: list[str]) -> None:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(func, hosts))

    def setup(self) -> None:
        log(f"lab {LAB!r}: {len(HOSTS)} hosts, ejabberd installed, state saved; {DB_HOST} for PostgreSQL")
        self.lab.up(len(HOSTS) + 1, fresh=True, release=RELEASE)
        inv = load_inventory(self.inventory(HOSTS))
        load_cookie(inv.cluster, create=True)
        with Fleet(inv) as fleet:
            results = fleet.parallel(lambda h: install(h, inv.cluster.ejabberd_version))
        for h, r in results.items():
            if isinstance(r, Exception):
                raise r
        self.parallel(lambda h: self.ssh(h, f"tar czf {PRISTINE} /etc/ejabberd /etc/default/ejabberd "
                                            "/var/lib/ejabberd 2>/dev/null"), HOSTS)

    def reset(self, hosts: list[str]) -> None:
        """Back to 'package installed, never configured or started' (also without the toolkit's
        firewall and epmd binding: a node the last cluster did not list would be refused)."""
        # killed first: the data goes anyway, and a node the manual runbook's join_cluster left
        # "deactivating" under Debian 13's unit would hold a graceful stop for its 300 s timeout
        script = ("systemctl kill --signal=SIGKILL ejabberd 2>/dev/null; "
                  "systemctl stop ejabberd; systemctl reset-failed ejabberd 2>/dev/null; "
                  "systemctl disable --quiet ejabberd; "
                  "systemctl disable --quiet --now easycluster-firewall 2>/dev/null; "
                  "nft delete table inet easycluster 2>/dev/null; "
                  "rm -rf /etc/easycluster /etc/systemd/system/easycluster-firewall.service "
                  "/etc/systemd/system/epmd.socket.d; systemctl stop epmd.service epmd.socket 2>/dev/null; "
                  "rm -rf /var/lib/ejabberd /var/lib/easycluster /etc/systemd/system/ejabberd.service.d "
                  f"/usr/local/lib/easy_cluster /var/backups/easycluster {MNESIA_BACKUP_DIR} "
                  "/run/ejabberd/* /var/log/ejabberd/* /root/.easycluster-*; systemctl daemon-reload; "
                  "systemctl start epmd.socket; "
                  f"tar xzf {PRISTINE} -C /")
        self.parallel(lambda h: self.ssh(h, script), hosts)

    # ---------------------------------------------------------------- the manual runbook
    def manual_files(self, hosts: list[str]) -> dict[str, Path]:
        """The files an operator would write: the toolkit's own, minus its plugin (bare ejabberd)."""
        inv = load_inventory(self.inventory(hosts))
        cookie = load_cookie(inv.cluster)
        out = {}
        for node in inv.nodes:
            d = self.tmp / f"manual-{node.host}"
            d.mkdir(exist_ok=True)
            for mf in managed_files(inv, node, self.lab.ip(node.host), cookie):
                data = mf.data().decode()
                if mf.path.endswith("ejabberd.yml"):   # stock ejabberd: none of the plugin's modules
                    data = re.sub(r"\n  # easycluster's own module.*\n  easy_cluster: \{\}\n", "\n", data)
                    data = re.sub(r"(?m)^cluster_backend: easy\n", "", data)
                    data = re.sub(r"(?m)^    db_type: easy\n", "    db_type: mnesia\n", data)
                if mf.path == "/etc/default/ejabberd":   # the interface the documented way
                    data = re.sub(r" -kernel inet_dist_use_interface \{(\d+),(\d+),(\d+),(\d+)\}", "", data)
                    data += f"INET_DIST_INTERFACE={self.lab.ip(node.host)}\n"
                (d / mf.path.rsplit("/", 1)[-1]).write_text(data)
                os.chmod(d / mf.path.rsplit("/", 1)[-1], 0o600)
            out[node.host] = d
        return out

    def manual_node(self, host: str, staged: Path) -> None:
        subprocess.run(["scp", "-q", "-F", str(self.lab.ssh_config), str(staged / "ejabberd"),
                        str(staged / "ejabberd.yml"), str(staged / ".erlang.cookie"), f"{host}:/root/"],
                       check=True, timeout=60)
        self.ssh(host, "install -m 644 /root/ejabberd /etc/default/ejabberd && "
                       "install -m 600 -o ejabberd -g ejabberd /root/ejabberd.yml /etc/ejabberd/ejabberd.yml && "
                       "install -m 400 -o ejabberd -g ejabberd /root/.erlang.cookie /var/lib/ejabberd/.erlang.cookie && "
                       "rm /root/ejabberd /root/ejabberd.yml /root/.erlang.cookie && "
                       "systemctl enable --quiet --now ejabberd && ejabberdctl status >/dev/null")

    def manual_join(self, host: str, seed: str = "lab1") -> None:
        """Timed: join_cluster alone. Under systemd it leaves the unit deactivating (ejabberd stops
        its application inside the VM: STOPPING=1), to be killed 300 s later; an operator must
        stop the node outside the unit and start it again (`mend_unit`, not timed: in the
        baseline's favour)."""
        # ejabberd 24.12's join_cluster (Debian 13) returns before the join is done (0.7 s): the
        # runbook waits until the node runs again with the seed in its running_db_nodes (23.01's
        # returns when done, and the wait ends at once)
        self.ssh(host, f"ejabberdctl --no-timeout join_cluster ejabberd@{seed} && "
                       "until ejabberdctl status >/dev/null 2>&1 && "
                       f"ejabberdctl list_cluster 2>/dev/null | grep -qx 'ejabberd@{seed}'; do sleep 0.2; done")

    def mend_unit(self, host: str) -> None:
        self.ssh(host, "if [ \"$(systemctl show ejabberd -p ActiveState --value)\" != active ]; then "
                       "ejabberdctl stop >/dev/null; ejabberdctl stopped; systemctl start ejabberd; fi")

    def manual_deploy(self, hosts: list[str]) -> float:
        staged = self.manual_files(hosts)
        t0 = time.monotonic()
        for h in hosts:
            self.manual_node(h, staged[h])
        for h in hosts[1:]:
            self.manual_join(h)
        took = time.monotonic() - t0
        self.parallel(self.mend_unit, hosts[1:])
        # (not timed) every node back in the first one's running_db_nodes: a node just started by
        # its unit may not be there yet when `systemctl start` returns (seen on Debian 13)
        deadline = time.monotonic() + 60
        while not all(f"ejabberd@{h}" in (running := self.ssh(hosts[0], "ejabberdctl list_cluster")) for h in hosts):
            assert time.monotonic() < deadline, running
            time.sleep(0.5)
        return took

    # ---------------------------------------------------------------- the toolkit
    def fab(self, *args: str) -> tuple[float, str]:
        env = {**os.environ, "EASYCLUSTER_LAB": LAB}
        t0 = time.monotonic()
        proc = subprocess.run([str(FAB), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"fab {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return took, proc.stdout

    def record(self, key: str, seconds: float) -> None:
        self.results.setdefault(key, []).append(seconds)
        log(f"{key}: {seconds:.2f}s")

    def phases(self, key: str, output: str) -> None:
        line = next((ln for ln in output.splitlines() if ln.startswith("time: ")), "")
        self.notes[key] = line[len("time: "):]

    def accepted(self, hosts: list[str]) -> dict[str, int]:
        """SSH logins each host's sshd has accepted so far (its journal)."""
        return {h: int(self.lab.exec(h, "journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey'",
                                     check=False).stdout.strip() or 0) for h in hosts}

    # ---------------------------------------------------------------- the data set
    def load_data(self, host: str, domain: str, users: int) -> None:
        """`users` users and as many roster items (user i has user i+1), written straight into
        Mnesia from inside the node (registering them one by one would take hours). Passwords
        are stored SCRAM'ed as ejabberd.yml wants them (one salt for all, computed once): plain
        ones would make the next node start transform the whole table (~14 ms a user)."""
        expr = (f"D = <<\"{domain}\">>, N = {users}, "
                "U = fun(I) -> <<\"bench\", (integer_to_binary(I))/binary>> end, "
                "Rec = fun(passwd, P, I) -> {passwd, {U(I), D}, P}; "
                "(roster, _, I) -> C = {U(I rem N + 1), D, <<>>}, "
                "{roster, {U(I), D, C}, {U(I), D}, C, <<>>, both, none, [<<\"bench\">>], <<>>, []} end, "
                # the two tables side by side (a dets table is one process: one writer each)
                "F = fun() -> P = ejabberd_auth:password_to_scram(D, <<\"pw\">>), "
                "Ws = [spawn_monitor(fun() -> lists:foreach(fun(I) -> mnesia:dirty_write(Rec(T, P, I)) end, "
                "lists:seq(1, N)) end) || T <- [passwd, roster]], "
                "[receive {'DOWN', R, process, W, normal} -> ok end || {W, R} <- Ws], ok end, F()")
        t0 = time.monotonic()
        out = self.lab.node_eval(host, expr, timeout=3600)
        assert out.strip() == "ok", out
        self.assert_holds(host, users)
        log(f"loaded {users} users and {users} roster items in {time.monotonic() - t0:.1f}s")

    def table_sizes(self, host: str) -> dict[str, str]:
        """passwd's and roster's storage type and size on the node, in one ssh (stock ejabberd's
        `mnesia_table_info`: a table's size, where `ejabberdctl registered_users` prints every
        user, ~21 s at 1M)."""
        tables = ("passwd", "roster")
        out = self.ssh(host, " && ".join(f"ejabberdctl mnesia_table_info {t} && echo @@" for t in tables))
        sizes = {}
        for table, info in zip(tables, out.split("@@\n")):
            size = re.search(r"\{size,(\d+)\}", info)
            storage = re.search(r"\{storage_type,(\w+)\}", info)
            sizes[table] = f"{size.group(1) if size else '?'} ({storage.group(1) if storage else '?'})"
        return sizes

    def assert_holds(self, host: str, users: int, storage: str = DEFAULT_STORAGE) -> None:
        sizes = self.table_sizes(host)
        wanted = f"{users} ({storage})"
        assert sizes == {"passwd": wanted, "roster": wanted}, f"{host} holds {sizes}, not {users} of each"

    def forget(self, seed: str, host: str) -> None:
        self.ssh(host, "systemctl stop ejabberd; true")
        self.ssh(seed, f"ejabberdctl --no-timeout easy_cluster_forget ejabberd@{host}")
        self.reset([host])

    # ---------------------------------------------------------------- the run
    def run(self) -> None:
        self.setup()
        for i in range(REPS):
            log(f"deploy round {i + 1}/{REPS}")
            for n in DEPLOY_SIZES:
                self.deploy_round(HOSTS[:n])
            self.reset(HOSTS)
            took, out = self.fab("deploy", "--inventory", str(self.inventory(HOSTS[:7], tuple(HOSTS[3:7]))))
            self.record("deploy 3 masters + 4 satellites", took)
            self.phases("deploy 3 masters + 4 satellites", out)
        for users in SIZES:
            self.data_round(users)
        self.sql_join()

    def deploy_round(self, hosts: list[str]) -> None:
        n = len(hosts)
        inv = self.inventory(hosts)
        self.reset(HOSTS)   # every host: a node left running would reach for the new cluster
        self.record(f"baseline {n} nodes", self.manual_deploy(hosts))
        self.reset(HOSTS)
        before = self.accepted(hosts)
        took, out = self.fab("deploy", "--inventory", str(inv))
        self.record(f"deploy {n} nodes", took)
        self.phases(f"deploy {n} nodes", out)
        if n == 3:
            after = self.accepted(hosts)
            self.notes["ssh connections per host"] = ", ".join(f"{h}: {after[h] - before[h]}" for h in hosts)
            self.record("ssh connections (max per host)", max(after[h] - before[h] for h in hosts))
            took, out = self.fab("deploy", "--inventory", str(inv))
            assert "no changes" in out, out
            self.record("no-op deploy 3 nodes", took)

    def grow(self, users: int) -> str:
        """A 3-node cluster holding `users` users and roster items: loaded into a one-node
        cluster, then copied whole by the joins of lab2 and lab3 (dirty writes into a replicated
        disc_only table reach the other replicas minutes later)."""
        three = HOSTS[:3]
        domain = load_inventory(self.inventory(three)).cluster.domains[0]
        self.reset(HOSTS)
        self.fab("deploy", "--inventory", str(self.inventory(three[:1])))
        log(f"loading {users} users and {users} roster items")
        self.load_data("lab1", domain, users)
        took, _ = self.fab("deploy", "--inventory", str(self.inventory(three)))
        for h in three:
            self.assert_holds(h, users)
        log(f"lab1..lab3 each hold {users} users (grown from one node in {took:.1f}s)")
        self.settle(three)
        return domain

    def settle(self, hosts: list[str], bound: float = 300) -> None:
        """(not timed) Until every node's VM is below the rolling restart's SETTLED_PCT of a core.
        A node that has just received a copy of a big table goes on rewriting its dets files for
        up to a minute (1,000,000 users); the next trial would run beside that work (the first
        add-master after a grow at 1,000,000 users: 65 s, the next ones 27-30 s), where a trial
        an operator runs finds the cluster at rest."""
        t0 = time.monotonic()
        with Fleet(load_inventory(self.inventory(hosts))) as fleet:
            for h in hosts:
                while not wait_settled(fleet[h])[0]:
                    assert time.monotonic() - t0 < bound, f"{h} still busy after {bound:.0f}s"
        log(f"{', '.join(hosts)} settled in {time.monotonic() - t0:.1f}s")

    def data_round(self, users: int) -> None:
        three, fourth = HOSTS[:3], HOSTS[3]
        inv3, inv4 = self.inventory(three), self.inventory(three + [fourth])
        domain = self.grow(users)
        if users == ROLLING_USERS:
            self.rolling(inv3, three, users)
        if users == USERS:
            self.volume(users)
            for i in range(REPS):
                log(f"backup round {i + 1}/{REPS}")
                for key, command in ((f"ejabberdctl backup, {users} users", "backup"),
                                     (f"easycluster's backup (plugin), {users} users", "easy_cluster_backup")):
                    if command == "backup" and i and users >= 1_000_000:
                        continue   # ~140 s each at 1M: once is enough to show it
                    t0 = time.monotonic()
                    self.ssh("lab1", f"cd / && ejabberdctl --no-timeout {command} /var/lib/ejabberd/bench.backup && "
                                     "rm /var/lib/ejabberd/bench.backup")
                    self.record(key, time.monotonic() - t0)
        staged = self.manual_files(three + [fourth])
        for i in range(REPS):
            log(f"join round {i + 1}/{REPS}, {users} users")
            self.add_master(inv4, fourth, users)
            t0 = time.monotonic()
            self.manual_node(fourth, staged[fourth])
            t1 = time.monotonic()
            self.manual_join(fourth)
            t2 = time.monotonic()
            self.record(f"manual join_cluster, {users} users", t2 - t0)
            self.record(f"  of which join_cluster alone, {users} users", t2 - t1)
            self.mend_unit(fourth)
            self.assert_holds(fourth, users)
            self.forget("lab1", fourth)
        if users == USERS:
            self.satellites(three, fourth, domain, users)
        if users == USERS and users > ROLLING_USERS:
            # restarts at scale: each node reloads every table from a peer (round 3's run at
            # 1,000,000 users ended in a partition here, before nodes booted at the cluster's
            # net_ticktime: docs/performance.md, "Restarts at scale")
            self.rolling(inv3, three, users)
        if users == ROLLING_USERS:   # each layout change restarts every master: see rolling's note
            self.layouts(three, fourth, users)

    def volume(self, users: int) -> None:
        """The bytes a join copies (passwd and roster, the seed's files), and what one host's
        disc writes at most: the same number of bytes through dd, synced, on the 4th host."""
        sizes = self.ssh("lab1", "stat -c %s /var/lib/ejabberd/passwd.DAT /var/lib/ejabberd/roster.DAT").split()
        self.table_bytes = sum(int(x) for x in sizes)
        mb = max(1, self.table_bytes // 2**20)
        out = self.ssh(HOSTS[3], f"dd if=/dev/zero of=/var/tmp/bench.dd bs=1M count={mb} conv=fdatasync 2>&1; "
                                 "rm -f /var/tmp/bench.dd")
        secs = float(re.search(r"copied, ([0-9.]+) s", out).group(1))
        self.disc_mb_s = self.table_bytes / 2**20 / secs
        log(f"passwd + roster: {self.table_bytes / 2**20:.1f} MiB; dd writes them in {secs:.2f}s "
            f"({self.disc_mb_s:.0f} MiB/s)")

    def rolling(self, inv: Path, hosts: list[str], users: int, storage: str = DEFAULT_STORAGE) -> None:
        """`fab rolling-restart` (no drain wait: no client is connected), while a client probes
        each node's c2s port every PROBE_EVERY s (a TCP connect and an XMPP stream header answered
        with its features): each node's time without service is its longest run of failed probes."""
        for i in range(REPS):
            log(f"rolling restart round {i + 1}/{REPS}, {users} users, {storage}")
            domain = load_inventory(inv).cluster.domains[0]
            probers = {h: Prober(self.lab.ip(h), domain) for h in hosts}
            for p in probers.values():
                p.start()
            since = int(time.time())
            try:
                time.sleep(1)
                took, out = self.fab("rolling-restart", "--drain", "0", "--inventory", str(inv))
                time.sleep(1)
            finally:
                for p in probers.values():
                    p.stop()
            tag = roll_tag(users, storage)
            self.record(f"rolling restart, 3 nodes, {tag}", took)
            for h, p in probers.items():
                self.record(f"  {h} without service, {tag}", p.longest_outage())
            self.record(f"  longest without service per node, {tag}", max(p.longest_outage() for p in probers.values()))
            self.record(f"  all 3 nodes without service at once, {tag}", Prober.all_down(list(probers.values())))
            self.notes[f"rolling restart, {tag}"] = " | ".join(
                ln.strip() for ln in out.splitlines() if re.search(r"\d+\.\ds\b", ln) and "lab" in ln)[:1500]
            self.notes[f"rolling restart, {tag}, each node's restart by its journal (s)"] = "; ".join(
                f"{h}: {self.timeline(h, since)}" for h in hosts)

    # a node's restart in its journal: (what ends a span, the line that marks its end)
    TIMELINE = (("stop", "ejabberd.service: Deactivated successfully"),
                ("to the start", "Starting ejabberd.service"),
                ("VM boot", "Loading configuration from"),
                ("configuration", "Configuration loaded successfully"),
                ("Mnesia and its tables", "Loading modules for"),
                ("modules (the user count among them)", "Waiting for Mnesia synchronization"),
                ("listeners", "Start accepting TCP connections at [::]:5222"))

    def timeline(self, host: str, since: int) -> str:
        """The last restart of the node since `since`, span by span, from its journal (the
        SIGTERM its stop begins with, to its client listener open)."""
        out = self.ssh(host, f"journalctl -u ejabberd --since @{since} --no-pager -o short-unix")
        lines = [(float(ln.split(" ", 1)[0]), ln) for ln in out.splitlines() if ln[:1].isdigit()]
        begin = max((t for t, ln in lines if "SIGTERM received" in ln), default=None)
        if begin is None:
            return "no restart found"
        spans, at = [], begin
        for name, marker in self.TIMELINE:
            t = next((t for t, ln in lines if t >= at and marker in ln), None)
            if t is None:
                spans.append(f"{name} ?")
                continue
            spans.append(f"{name} {t - at:.2f}")
            at = t
        return ", ".join(spans) + f" (in all {at - begin:.2f})"

    def memory(self, host: str) -> tuple[float, float]:
        """The node's VM resident memory and its Mnesia directory, MiB (one ssh)."""
        out = self.ssh(host, "pid=$(pgrep -x beam.smp --cgroup /system.slice/ejabberd.service) && "
                             "awk '/^VmRSS/ {print $2}' /proc/$pid/status && du -sk /var/lib/ejabberd | cut -f1")
        rss, disc = (int(x) / 1024 for x in out.split())
        return rss, disc

    def layouts(self, three: list[str], fourth: str, users: int) -> None:
        """cluster.storage: the same cluster in both layouts. Memory and disc per master in the
        default one (disc_only_copies: dets files); then `fab deploy` with `storage: disc_copies`
        (each master restarted in turn, ejabberd converting its copies as it starts), memory and
        disc again, a rolling restart with the probers, and add-master into it (REPS)."""
        for storage in (DEFAULT_STORAGE, MEMORY_STORAGE):
            if storage == MEMORY_STORAGE:
                log(f"converting the cluster's {users} users to {storage}")
                took, out = self.fab("deploy", "--inventory", str(self.inventory(three, storage=storage)))
                self.record(f"deploy converting to {storage}, {users} users", took)
                self.phases(f"deploy converting to {storage}, {users} users", out)
                for h in three:
                    self.assert_holds(h, users, storage)
            rss, disc = self.memory("lab1")
            self.notes[f"memory of a master ({storage}, {users} users)"] = f"VM resident {rss:.0f} MiB, Mnesia directory {disc:.0f} MiB"
            self.layout_memory[storage] = (rss, disc)
            # what ejabberd_auth_mnesia:start/1 does at every start: count the host's users (a full
            # select of passwd), timed inside the node
            domain = load_inventory(self.inventory(three)).cluster.domains[0]
            took_ms = self.lab.node_eval("lab1", "element(1, timer:tc(fun() -> length(ejabberd_auth_mnesia:get_users("
                                                 f"<<\"{domain}\">>, [])) end)) div 1000")
            self.notes[f"ejabberd's user count at start ({storage}, {users} users), ms"] = took_ms.strip()
        inv3, inv4 = self.inventory(three, storage=MEMORY_STORAGE), self.inventory(three + [fourth], storage=MEMORY_STORAGE)
        self.rolling(inv3, three, users, MEMORY_STORAGE)
        for i in range(REPS):
            log(f"join round {i + 1}/{REPS}, {users} users, {MEMORY_STORAGE}")
            self.add_master(inv4, fourth, users, MEMORY_STORAGE)

    def add_master(self, inv4: Path, fourth: str, users: int, storage: str = DEFAULT_STORAGE) -> None:
        """`fab add-master` of the 4th host, timed, its phases, copies and join steps noted;
        then it holds every user in the cluster's layout, and is forgotten and reset."""
        tag = roll_tag(users, storage)
        took, out = self.fab("add-master", "--host", fourth, "--inventory", str(inv4))
        self.record(f"add-master, {tag}", took)
        self.phases(f"add-master, {tag}", out)
        copied = [ln.split("] ", 1)[1].strip() for ln in out.splitlines() if "  copied " in ln]
        self.notes[f"add-master tables, {tag}"] = "; ".join(copied)
        if storage == DEFAULT_STORAGE:
            self.copy_seconds[users] = sum(float(m) for m in re.findall(r"in ([0-9.]+)s", "; ".join(copied)))
        ticks = [ln.split("] ", 1)[1].strip() for ln in out.splitlines() if "  copying " in ln]
        if ticks:
            self.notes[f"add-master copy progress, {tag}"] = " | ".join(ticks)
        self.notes[f"add-master join steps (in the plugin), {tag}"] = next(
            (ln.split("] ", 1)[1].strip() for ln in out.splitlines() if "ping " in ln and "ms, " in ln), "")
        self.assert_holds(fourth, users, storage)
        self.forget("lab1", fourth)

    def satellites(self, three: list[str], fourth: str, domain: str, users: int) -> None:
        inv_sat = self.inventory(three + [fourth], (fourth,))
        for i in range(REPS):
            log(f"satellite round {i + 1}/{REPS}")
            took, out = self.fab("add-satellite", "--host", fourth, "--inventory", str(inv_sat))
            self.record(f"add-satellite, {users} users", took)
            self.phases(f"add-satellite, {users} users", out)
            if i == 0:
                for host in ("lab1", fourth):
                    kind = "satellite" if host == fourth else "master"
                    logins, rosters = self.latencies(self.lab.ip(host), domain)
                    self.notes[f"XMPP login on a {kind} (ms, median of {LATENCY_TRIES})"] = f"{logins:.1f}"
                    self.notes[f"roster read on a {kind} (ms, median of {LATENCY_TRIES})"] = f"{rosters:.1f}"
            self.forget("lab1", fourth)

    def sql_join(self) -> None:
        """add-master into a cluster whose data lives in PostgreSQL: the join copies the RAM
        tables only (and the schema), whatever the number of users."""
        three, fourth = HOSTS[:3], HOSTS[3]
        inv3, inv4 = self.inventory(three, sql=True), self.inventory(three + [fourth], sql=True)
        domain = load_inventory(inv3).cluster.domains[0]
        self.reset(HOSTS)
        self.fab("deploy", "--inventory", str(inv3))
        log(f"loading {USERS} users and {USERS} roster items into PostgreSQL on {DB_HOST}")
        sql = (f"INSERT INTO users (username, server_host, password) SELECT 'bench' || i, '{domain}', 'pw' "
               f"FROM generate_series(1, {USERS}) i; "
               "INSERT INTO rosterusers (username, server_host, jid, nick, subscription, ask, askmessage, server, "
               f"subscribe, type) SELECT 'bench' || i, '{domain}', 'bench' || (i % {USERS} + 1) || '@{domain}', '', "
               f"'B', 'N', '', 'N', '', 'item' FROM generate_series(1, {USERS}) i;")
        self.ssh(DB_HOST, "cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d ejabberd", stdin=sql)
        counted = f"ejabberdctl stats_host registeredusers {domain}"   # one SELECT count(*) in the database
        assert self.ssh("lab1", counted).strip() == str(USERS), f"lab1 does not count {USERS} users in the database"
        for i in range(REPS):
            log(f"sql join round {i + 1}/{REPS}")
            took, out = self.fab("add-master", "--host", fourth, "--inventory", str(inv4))
            self.record(f"add-master, {USERS} users in PostgreSQL", took)
            self.phases(f"add-master, {USERS} users in PostgreSQL", out)
            assert self.ssh(fourth, counted).strip() == str(USERS)
            self.forget("lab1", fourth)

    @staticmethod
    def latencies(address: str, domain: str) -> tuple[float, float]:
        """Medians (ms) of LATENCY_TRIES XMPP logins (connect, SCRAM, bind, presence echoed) and
        of as many roster reads (an iq get of a user holding one item), by a real client."""
        import asyncio
        from easycluster.xmpp import Client, connect

        async def measure() -> tuple[list[float], list[float]]:
            logins, rosters = [], []
            for i in range(LATENCY_TRIES):
                client = Client(f"bench{i + 1}@{domain}", "pw")
                t0 = time.monotonic()
                await connect(client, address, 5222)
                logins.append((time.monotonic() - t0) * 1000)
                t1 = time.monotonic()
                await client.get_roster()
                rosters.append((time.monotonic() - t1) * 1000)
                client.disconnect()
                await asyncio.sleep(0.05)
            return logins, rosters
        logins, rosters = asyncio.run(measure())
        return statistics.median(logins), statistics.median(rosters)

    # ---------------------------------------------------------------- report
    def report(self) -> str:
        med = {k: statistics.median(v) for k, v in self.results.items()}
        targets = [(name, f"{value:.2f}" if value is not None else f"not measured (BENCH_USERS={USERS})",
                    f"<= {bound}" if bound is not None else "== 1",
                    "met" if value is not None and value <= (bound if bound is not None else 1) else
                    "MISSED" if value is not None else "") for name, value, bound in self.targets(med)]
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), platform.processor())
        out = [f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `make bench` "
               f"(BENCH_USERS={USERS}, BENCH_REPS={REPS}, BENCH_RELEASE={RELEASE}) on "
               f"{os.cpu_count()} cores ({cpu}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
               f"{platform.system()} {platform.release()}; lab hosts run Debian {release_name(RELEASE)} "
               f"(ejabberd {yaml.safe_load(self.lab.inventory.read_text())['cluster']['ejabberd_version']}) "
               "and boot its systemd as PID 1 (systemd-nspawn) "
               "in network namespaces on that machine, every node under Debian's ejabberd.service (the "
               "manual runbook's `join_cluster` is timed until the node runs again in the cluster; the unit "
               f"it leaves deactivating is mended outside the timing); {REPS} repetitions, medians. Drawn in "
               f"docs/{PLOT.name}.", "",
               "| target | measured | wanted | |", "|---|---|---|---|"]
        out += [f"| {name} | {value} | {want} | {verdict} |" for name, value, want, verdict in targets]
        out += ["", "Deploys (s, medians):", "", "| nodes | bare runbook | `fab deploy` | ratio |", "|---|---|---|---|"]
        out += [f"| {n} | {med[f'baseline {n} nodes']:.2f} | {med[f'deploy {n} nodes']:.2f} | "
                f"{med[f'deploy {n} nodes'] / med[f'baseline {n} nodes']:.2f} |" for n in DEPLOY_SIZES]
        out += ["", "A 4th master into 3 nodes holding the users and as many roster items (s, medians; the copy "
                "is the plugin's own timing of passwd's and roster's copies in the last run):", "",
                "| users | manual: start + `join_cluster` | of which `join_cluster` | `fab add-master` | ratio | "
                "copy | records/s copied |", "|---|---|---|---|---|---|---|"]
        for n in SIZES:
            a, m, j = med[f"add-master, {n} users"], med[f"manual join_cluster, {n} users"], \
                med[f"  of which join_cluster alone, {n} users"]
            c = self.copy_seconds.get(n, 0.0)
            out.append(f"| {n} | {m:.2f} | {j:.2f} | {a:.2f} | {a / m:.2f} | {c:.1f} | "
                       f"{(2 * n / c) if c else 0:,.0f} |")
        if self.table_bytes and self.copy_seconds.get(USERS):
            mib, c = self.table_bytes / 2**20, self.copy_seconds[USERS]
            out += ["", f"Volume at {USERS} users: passwd + roster are {mib:.1f} MiB of dets files "
                    f"({2 * USERS} records). The join copies them at {2 * USERS / c:,.0f} records/s, "
                    f"{mib / c:.1f} MiB/s (the two copies, one after the other, {c:.1f} s); one host's disc "
                    f"writes that many bytes at {self.disc_mb_s:.0f} MiB/s (dd, synced), so the disc is not "
                    "what limits a join."]
        rolls = [(n, st) for n in sorted({ROLLING_USERS, USERS}) for st in (DEFAULT_STORAGE, MEMORY_STORAGE)
                 if f"rolling restart, 3 nodes, {roll_tag(n, st)}" in med]
        if rolls:
            out += ["", f"Rolling restarts of 3 nodes (`fab rolling-restart --drain 0`; each node's time without "
                    f"service: a client probing its c2s port every {Prober.PROBE_EVERY} s, its longest run of "
                    "unanswered probes; medians):", "",
                    "| users | storage | whole restart (s) | " + " | ".join(f"{h} without service (s)" for h in HOSTS[:3])
                    + " | all three at once (s) |", "|---|---|---|" + "---|" * 4]
            for n, st in rolls:
                tag = roll_tag(n, st)
                out.append(f"| {n} | {st} | {med[f'rolling restart, 3 nodes, {tag}']:.1f} | " + " | ".join(
                    f"{med[f'  {h} without service, {tag}']:.1f}" for h in HOSTS[:3]) +
                    f" | {med[f'  all 3 nodes without service at once, {tag}']:.1f} |")
        if len(self.layout_memory) == 2:
            conv = f"deploy converting to {MEMORY_STORAGE}, {ROLLING_USERS} users"
            out += ["", f"cluster.storage at {ROLLING_USERS} users (medians; memory and disc of one master, lab1):", "",
                    "| storage | `fab add-master` (s) | rolling restart (s) | longest without service per node (s) "
                    "| VM resident memory (MiB) | Mnesia directory (MiB) |", "|---|---|---|---|---|---|"]
            for st in (DEFAULT_STORAGE, MEMORY_STORAGE):
                tag = roll_tag(ROLLING_USERS, st)
                rss, disc = self.layout_memory[st]
                out.append(f"| {st} | {med[f'add-master, {tag}']:.2f} | {med[f'rolling restart, 3 nodes, {tag}']:.1f} | "
                           f"{med[f'  longest without service per node, {tag}']:.1f} | {rss:.0f} | {disc:.0f} |")
            out += ["", f"Moving the running cluster from {DEFAULT_STORAGE} to {MEMORY_STORAGE} (`fab deploy` with "
                    f"`cluster.storage: {MEMORY_STORAGE}`: each master restarted in turn, converting its copies as "
                    f"it starts) took {med[conv]:.1f} s."]
        out += ["", "| measurement | runs (s) | median (s) |", "|---|---|---|"]
        out += [f"| {k.strip()} | {' '.join(f'{x:.2f}' for x in v)} | {med[k]:.2f} |" for k, v in self.results.items()]
        sat_key, master_key = f"add-satellite, {USERS} users", f"add-master, {USERS} users"
        if sat_key in med:
            out += ["", f"Satellites: joining one into the cluster holding {USERS} users took "
                    f"{med[sat_key]:.2f} s (`fab add-satellite`, whole command) against {med[master_key]:.2f} s "
                    "for a master (`fab add-master`): a satellite copies no table, only RAM tables "
                    "(sessions, routes), so its join does not grow with the data. The price is remote "
                    "access: every login and roster read on a satellite reads the masters' copies over "
                    "the distribution (and ejabberd's caches are off for tables with no local copy); "
                    "see the latencies below, and docs/runbooks/satellites.md for when the trade pays."]
        sql_key = f"add-master, {USERS} users in PostgreSQL"
        if sql_key in med:
            out += ["", f"cluster.database: joining a master into the cluster whose {USERS} users and {USERS} "
                    f"roster items live in PostgreSQL took {med[sql_key]:.2f} s (`fab add-master`, whole "
                    f"command) against {med[master_key]:.2f} s when they live in Mnesia "
                    f"({med[sql_key] / med[master_key]:.2f}x): with `default_db: sql` Mnesia holds RAM tables "
                    "only (sessions, routes), so the join copies the schema and those, whatever the data."]
        out += ["", "Where the time goes (the toolkit's own phase timings, last run):", ""]
        out += [f"- {k}: {v}" for k, v in self.notes.items()]
        return "\n".join(out)

    @staticmethod
    def targets(med: dict[str, float]) -> list[tuple[str, float | None, float | None]]:
        """Issue 31's targets, under its labels: (label, measured or None, bound; None: == 1)."""
        def ratio(a: str, b: str) -> float | None:
            return med[a] / med[b] if a in med and b in med else None
        rows: list[tuple[str, float | None, float | None]] = [
            ("3-node deploy / bare sequential runbook", ratio("deploy 3 nodes", "baseline 3 nodes"), 0.6),
            ("8-node deploy / bare sequential runbook", ratio("deploy 8 nodes", "baseline 8 nodes"), 0.6)]
        for n, bound in ((10_000, 0.8), (100_000, 0.8), (1_000_000, 0.7)):
            rows.append((f"add-master / manual join_cluster ({n} users)",
                         ratio(f"add-master, {n} users", f"manual join_cluster, {n} users"), bound))
        rows.append(("rolling restart: longest time without service per node (s)",
                     med.get(f"  longest without service per node, {roll_tag(ROLLING_USERS)}"), 3))
        rows.append(("no-op deploy, 3 nodes (s)", med.get("no-op deploy 3 nodes"), 3))
        rows.append(("SSH connections per host per run", med.get("ssh connections (max per host)"), None))
        return rows

    def plot(self) -> None:
        """docs/scaling.png: deploy time against N, add-master time against users, the toolkit
        and the manual runbook side by side (medians, the bench's own results)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        med = {k: statistics.median(v) for k, v in self.results.items()}
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        ns = list(DEPLOY_SIZES)
        left.plot(ns, [med[f"baseline {n} nodes"] for n in ns], "o--", label="bare runbook (ssh, join_cluster)")
        left.plot(ns, [med[f"deploy {n} nodes"] for n in ns], "o-", label="fab deploy")
        left.set(xlabel="nodes", ylabel="seconds", title="Deploy from installed packages", xticks=ns)
        right.plot(SIZES, [med[f"manual join_cluster, {n} users"] for n in SIZES], "o--",
                   label="manual: start + join_cluster")
        right.plot(SIZES, [med[f"add-master, {n} users"] for n in SIZES], "o-", label="fab add-master")
        right.set_xscale("log")
        right.set(xlabel="users (+ as many roster items)", ylabel="seconds", title="A 4th master joins",
                  xticks=SIZES, xticklabels=[f"{n:,}" for n in SIZES])
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
            ax.legend()
        fig.suptitle(f"make bench, {datetime.now(timezone.utc).strftime('%Y-%m-%d')}: medians of {REPS}", fontsize=10)
        fig.tight_layout()
        fig.savefig(PLOT, dpi=90)
        plt.close(fig)
        log(f"drawn in {PLOT}")

    def write(self, text: str) -> None:
        """Between the release's markers (a page without them gets them at its end)."""
        write_between(DOC, f"<!-- BENCH START {RELEASE} -->", f"<!-- BENCH END {RELEASE} -->", text,
                      new_page="# Performance\n")
        log(f"written to {DOC}")


def main() -> int:
    if os.geteuid() != 0:
        print("make bench needs root (it runs a lab)", file=sys.stderr)
        return 1
    bench = Bench()
    try:
        bench.run()
        text = bench.report()
        print(text)
        bench.write(text)
        bench.plot()
    finally:
        if not os.environ.get("BENCH_KEEP_LAB"):
            bench.lab.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
