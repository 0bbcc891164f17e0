"""`make bench`: easycluster against the bare manual runbook, on a lab of its own.

Every trial starts from the same state: hosts with the ejabberd package installed and
nothing else (the state right after `apt-get install`, saved once and put back before each
trial). Measured, each REPS times, medians reported:
  1. baseline: the manual runbook for 3 nodes over plain ssh, one host after another
     (write config and cookie, start, wait until started; then `ejabberdctl join_cluster`);
  2. `fab deploy` of the same 3 nodes;  3. `fab deploy` of 5 nodes;  4. a no-op `fab deploy`;
  5. `fab add-master` of a 4th node into a cluster holding USERS users and USERS roster
     items, against the manual way (config, start, `ejabberdctl join_cluster`) into the same;
  6. SSH connections per host in one `fab deploy`, counted in each host's sshd log;
  7. a full Mnesia backup of that data: `ejabberdctl backup` against the toolkit's own;
  8. satellites: `fab deploy` of 3 masters + 4 satellites; `fab add-satellite` of the 4th node
     into the cluster holding USERS users (against add-master's); an XMPP login and a roster
     read on a satellite against on a master (LATENCY_TRIES each, medians);
  9. cluster.database: `fab add-master` of the 4th node into a 3-node cluster whose USERS users
     and USERS roster items live in PostgreSQL (on DB_HOST), against add-master's into Mnesia.
Results: printed, and written into docs/performance.md between its BENCH markers.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

from easycluster.inventory import load_inventory
from easycluster_lab import Lab
from easycluster.nodectl import install
from easycluster.remote import Fleet
from easycluster.render import managed_files
from easycluster.secrets import load_cookie

LAB = os.environ.get("BENCH_LAB", "bench")
REPS = int(os.environ.get("BENCH_REPS", "3"))
USERS = int(os.environ.get("BENCH_USERS", "100000"))
FAB = Path(sys.executable).parent / "fab"
DOC = REPO / "docs" / "performance.md"
PRISTINE = "/root/easycluster-bench-pristine.tgz"
HOSTS = [f"lab{i}" for i in range(1, 8)]
DB_HOST = "lab8"     # the database host of the cluster.database measurement (not a node)
LATENCY_TRIES = 20


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self) -> None:
        self.lab = Lab(LAB)
        self.tmp = Path(tempfile.mkdtemp(prefix="easycluster-bench-"))
        self.results: dict[str, list[float]] = {}
        self.notes: dict[str, str] = {}

    # ---------------------------------------------------------------- lab and state
    def inventory(self, hosts: list[str], satellites: tuple[str, ...] = (), sql: bool = False) -> Path:
        data = yaml.safe_load(self.lab.inventory.read_text())
        data["nodes"] = [{"host": h, **({"role": "satellite"} if h in satellites else {})} for h in hosts]
        if sql:
            data["cluster"]["database"] = {"type": "postgresql", "host": DB_HOST,
                                           "password_file": str(self.tmp / "database.password")}
        path = self.tmp / f"inv-{len(hosts)}-{hosts[-1]}-{len(satellites)}s{'-sql' if sql else ''}.yml"
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
        self.lab.up(len(HOSTS) + 1, fresh=True)
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
        """Back to 'package installed, never configured or started'."""
        script = ("systemctl stop ejabberd; systemctl reset-failed ejabberd 2>/dev/null; "
                  "systemctl disable --quiet ejabberd; "
                  "rm -rf /var/lib/ejabberd /var/lib/easycluster /etc/systemd/system/ejabberd.service.d "
                  "/usr/local/lib/easy_cluster /var/backups/easycluster /var/backups/easycluster-mnesia "
                  "/run/ejabberd/* /var/log/ejabberd/* /root/.easycluster-*; systemctl daemon-reload; "
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
        self.ssh(host, f"ejabberdctl --no-timeout join_cluster ejabberd@{seed}")

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
        running = self.ssh(hosts[0], "ejabberdctl mnesia running_db_nodes")
        assert all(f"ejabberd@{h}" in running for h in hosts), running
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
    def load_data(self, host: str, domain: str) -> None:
        """USERS users and USERS roster items (user i has user i+1), written straight into
        Mnesia from inside the node (registering them one by one would take hours). Passwords
        are stored SCRAM'ed as ejabberd.yml wants them (one salt for all, computed once): plain
        ones would make the next node start transform the whole table (~14 ms a user)."""
        expr = (f"D = <<\"{domain}\">>, N = {USERS}, "
                "U = fun(I) -> <<\"bench\", (integer_to_binary(I))/binary>> end, "
                "F = fun() -> P = ejabberd_auth:password_to_scram(D, <<\"pw\">>), lists:foreach(fun(I) -> "
                "mnesia:dirty_write({passwd, {U(I), D}, P}), "
                "C = {U(I rem N + 1), D, <<>>}, "
                "mnesia:dirty_write({roster, {U(I), D, C}, {U(I), D}, C, <<>>, both, none, [<<\"bench\">>], <<>>, []}) "
                "end, lists:seq(1, N)) end, "
                f"io:format(\"~p~n\", [rpc:call('ejabberd@{host}', erlang, apply, [F, []], infinity)]), halt().")
        inner = f". /etc/default/ejabberd; exec erl -sname benchload$$ -hidden -noinput $ERL_OPTIONS -eval {shlex.quote(expr)}"
        out = self.ssh(host, f"cd / && su ejabberd -s /bin/sh -c {shlex.quote(inner)}")
        assert out.strip() == "ok", out
        n = int(self.ssh(host, f"ejabberdctl registered_users {domain} | wc -l").strip())
        assert n == USERS, f"{host} holds {n} of {USERS} users"
        log(f"loaded {USERS} users and {USERS} roster items")

    def forget(self, seed: str, host: str) -> None:
        self.ssh(host, "systemctl stop ejabberd; true")
        self.ssh(seed, f"ejabberdctl --no-timeout easy_cluster_forget ejabberd@{host}")
        self.reset([host])

    # ---------------------------------------------------------------- the run
    def run(self) -> None:
        self.setup()
        three, five = HOSTS[:3], HOSTS[:5]
        inv3, inv5 = self.inventory(three), self.inventory(five)
        for i in range(REPS):
            log(f"round {i + 1}/{REPS}")
            self.reset(HOSTS)   # every host: a node left running would reach for the new cluster
            self.record("baseline 3 nodes", self.manual_deploy(three))
            self.reset(HOSTS)
            before = self.accepted(three)
            took, out = self.fab("deploy", "--inventory", str(inv3))
            self.record("deploy 3 nodes", took)
            self.phases("deploy 3 nodes", out)
            after = self.accepted(three)
            self.notes["ssh connections per host"] = ", ".join(f"{h}: {after[h] - before[h]}" for h in three)
            self.record("ssh connections (max per host)", max(after[h] - before[h] for h in three))
            took, out = self.fab("deploy", "--inventory", str(inv3))
            assert "no changes" in out, out
            self.record("no-op deploy 3 nodes", took)
            self.reset(HOSTS)
            took, out = self.fab("deploy", "--inventory", str(inv5))
            self.record("deploy 5 nodes", took)
            self.phases("deploy 5 nodes", out)
            self.reset(HOSTS)
            took, out = self.fab("deploy", "--inventory", str(self.inventory(HOSTS, tuple(HOSTS[3:]))))
            self.record("deploy 3 masters + 4 satellites", took)
            self.phases("deploy 3 masters + 4 satellites", out)
        self.big_join()
        self.sql_join()

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
        self.ssh(DB_HOST, f"cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d ejabberd", stdin=sql)
        n = int(self.ssh("lab1", f"ejabberdctl registered_users {domain} | wc -l").strip())
        assert n == USERS, f"lab1 counts {n} of {USERS} users in the database"
        for i in range(REPS):
            log(f"sql join round {i + 1}/{REPS}")
            took, out = self.fab("add-master", "--host", fourth, "--inventory", str(inv4))
            self.record(f"add-master, {USERS} users in PostgreSQL", took)
            self.phases(f"add-master, {USERS} users in PostgreSQL", out)
            assert self.ssh(fourth, f"ejabberdctl registered_users {domain} | wc -l").strip() == str(USERS)
            self.forget("lab1", fourth)

    def big_join(self) -> None:
        three, fourth = HOSTS[:3], HOSTS[3]
        inv3, inv4 = self.inventory(three), self.inventory(three + [fourth])
        domain = load_inventory(inv3).cluster.domains[0]
        self.reset(HOSTS)
        # loaded into a one-node cluster, then copied whole by the joins of lab2 and lab3:
        # dirty writes into a replicated disc_only table reach the other replicas minutes later
        self.fab("deploy", "--inventory", str(self.inventory(three[:1])))
        log(f"loading {USERS} users and {USERS} roster items")
        self.load_data("lab1", domain)
        self.fab("deploy", "--inventory", str(inv3))
        for h in three:
            assert self.ssh(h, f"ejabberdctl registered_users {domain} | wc -l").strip() == str(USERS), h
        log(f"lab1..lab3 each hold {USERS} users")
        staged = self.manual_files(three + [fourth])
        for i in range(REPS):
            log(f"backup round {i + 1}/{REPS}")
            for key, command in ((f"ejabberdctl backup, {USERS} users", "backup"),
                                 (f"easycluster's backup (plugin), {USERS} users", "easy_cluster_backup")):
                t0 = time.monotonic()
                self.ssh("lab1", f"cd / && ejabberdctl --no-timeout {command} /var/lib/ejabberd/bench.backup && "
                                 "rm /var/lib/ejabberd/bench.backup")
                self.record(key, time.monotonic() - t0)
        for i in range(REPS):
            log(f"join round {i + 1}/{REPS}")
            took, out = self.fab("add-master", "--host", fourth, "--inventory", str(inv4))
            self.record(f"add-master, {USERS} users", took)
            self.phases(f"add-master, {USERS} users", out)
            self.notes["add-master tables"] = "; ".join(
                ln.split("] ", 1)[1].strip() for ln in out.splitlines() if "  copied " in ln)
            self.notes["add-master join steps (in the plugin)"] = next(
                (ln.split("] ", 1)[1].strip() for ln in out.splitlines() if "ping " in ln and "ms, " in ln), "")
            self.forget("lab1", fourth)
            t0 = time.monotonic()
            self.manual_node(fourth, staged[fourth])
            t1 = time.monotonic()
            self.manual_join(fourth)
            t2 = time.monotonic()
            self.record(f"manual join_cluster, {USERS} users", t2 - t0)
            self.record(f"  of which join_cluster alone, {USERS} users", t2 - t1)
            self.mend_unit(fourth)
            assert self.ssh(fourth, f"ejabberdctl registered_users {domain} | wc -l").strip() == str(USERS)
            self.forget("lab1", fourth)
        inv_sat = self.inventory(three + [fourth], (fourth,))
        for i in range(REPS):
            log(f"satellite round {i + 1}/{REPS}")
            took, out = self.fab("add-satellite", "--host", fourth, "--inventory", str(inv_sat))
            self.record(f"add-satellite, {USERS} users", took)
            self.phases(f"add-satellite, {USERS} users", out)
            if i == 0:
                for host in ("lab1", fourth):
                    kind = "satellite" if host == fourth else "master"
                    logins, rosters = self.latencies(self.lab.ip(host), domain)
                    self.notes[f"XMPP login on a {kind} (ms, median of {LATENCY_TRIES})"] = f"{logins:.1f}"
                    self.notes[f"roster read on a {kind} (ms, median of {LATENCY_TRIES})"] = f"{rosters:.1f}"
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
        base, d3, d5 = med["baseline 3 nodes"], med["deploy 3 nodes"], med["deploy 5 nodes"]
        noop = med["no-op deploy 3 nodes"]
        am, mj = med[f"add-master, {USERS} users"], med[f"manual join_cluster, {USERS} users"]
        conns = med["ssh connections (max per host)"]
        rows = [(k, " ".join(f"{x:.2f}" for x in v), f"{med[k]:.2f}") for k, v in self.results.items()]
        targets = [
            ("3-node deploy / bare sequential runbook", f"{d3 / base:.2f}", "<= 0.8", d3 / base <= 0.8),
            ("no-op deploy, 3 nodes (s)", f"{noop:.2f}", "<= 3", noop <= 3),
            ("5-node deploy / 3-node deploy", f"{d5 / d3:.2f}", "<= 1.6", d5 / d3 <= 1.6),
            (f"add-master / manual join_cluster ({USERS} users)", f"{am / mj:.2f}", "<= 1.1", am / mj <= 1.1),
            ("SSH connections per host per run", f"{conns:.0f}", "== 1", conns == 1),
        ]
        records = 2 * USERS
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), platform.processor())
        out = [f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `make bench` on "
               f"{os.cpu_count()} cores ({cpu}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
               f"{platform.system()} {platform.release()}; lab hosts boot systemd as PID 1 (systemd-nspawn) "
               "in network namespaces on that machine, every node under Debian's ejabberd.service (the "
               "manual runbook's `join_cluster` is timed alone; the unit it leaves deactivating is mended "
               f"outside the timing); {REPS} repetitions, medians.", "",
               "| target | measured | wanted | |", "|---|---|---|---|"]
        out += [f"| {name} | {value} | {want} | {'met' if ok else 'MISSED'} |" for name, value, want, ok in targets]
        out += ["", f"Data volume of the join: {records} records ({USERS} users + {USERS} roster items): "
                f"{records / am:,.0f} records/s through `fab add-master` (whole command), "
                f"{records / med[f'  of which join_cluster alone, {USERS} users']:,.0f} records/s through "
                "`ejabberdctl join_cluster` alone.", "",
                "| measurement | runs (s) | median (s) |", "|---|---|---|"]
        out += [f"| {k.strip()} | {runs} | {m} |" for k, runs, m in rows]
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

    def write(self, text: str) -> None:
        doc = DOC.read_text() if DOC.exists() else "# Performance\n\n<!-- BENCH START -->\n<!-- BENCH END -->\n"
        start, end = "<!-- BENCH START -->", "<!-- BENCH END -->"
        head, _, rest = doc.partition(start)
        _, _, tail = rest.partition(end)
        DOC.write_text(f"{head}{start}\n{text}\n{end}{tail}")
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
    finally:
        if not os.environ.get("BENCH_KEEP_LAB"):
            bench.lab.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
