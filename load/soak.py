"""`make soak`: faults drawn at random for SOAK_MINUTES (30) under make load's traffic, every
message accounted for.

The same lab, users and accounting as `make load` (load/run.py: 3 masters lab1..lab3, a spare
lab4, SOAK_USERS clients (500) sending SOAK_RATE messages a second (100), each message counted
once as delivered (live or from offline storage), bounced with its reason, delivered twice, or
unaccounted). Instead of make load's fixed sequence, a fault is drawn every 45-90 s, from a
random generator seeded with SOAK_SEED (printed; a run is repeated with the same seed: the same
faults, hosts and durations in the same order):

- kill -9 of a node's VM (systemd starts it again);
- a host's power cut, booted again 10-40 s later;
- a partition of a host for 20-60 s; then the partition runbook: `fab status` until the
  cluster is healthy or PARTITIONED, and `fab heal --winner` a node of the other side;
- a bad link on a host for 30-60 s (Lab.impair_link: 5% of packets lost each way, the rate held
  to 2 Mbit/s with up to 300 ms queued: this machine's kernel has no netem, so no fixed delay);
- `fab rolling-restart`;
- `fab add-master --host lab4`, 20 s of traffic with a quarter of the users on it, then
  `fab remove-node --host lab4`;
- with SOAK_DATABASE=replicated (cluster.database on lab5..lab7): the database primary's power
  cut, booted 40 s later.

Faults overlap: the next one is drawn on time, whether or not the previous one has recovered.
A fault on a host picks a master that no unrecovered fault holds, and at most two masters are
held at once (so one always serves; "any node can die", not all of them). The operator's
commands (rolling-restart, add-master/remove-node, heal) run one at a time, as one operator
would run them, each after `fab status` says healthy (the runbooks' first step), and are run
again when they fail (the runbooks' step), at most 3 times.

A fault is recovered when `fab status` (polled every few seconds by one watcher) says healthy
after it ended; each has a stated bound (BOUNDS). A fault not recovered within its bound fails
the run, as does any unaccounted message. The per-fault table goes into docs/reliability.md
between the SOAK markers. At most ~40 minutes with the defaults: setup ~5, faults 30, drain ~2.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

# make load's harness, on a lab of its own
os.environ["LOAD_LAB"] = os.environ.get("SOAK_LAB", "soak")
os.environ["LOAD_USERS"] = os.environ.get("SOAK_USERS", "500")
os.environ["LOAD_RATE"] = os.environ.get("SOAK_RATE", "100")
os.environ["LOAD_DATABASE"] = os.environ.get("SOAK_DATABASE", "")
os.environ["LOAD_KEEP"] = os.environ.get("SOAK_KEEP", "")
if os.environ.get("SOAK_RELEASE"):
    os.environ["LOAD_RELEASE"] = os.environ["SOAK_RELEASE"]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as load                                           # noqa: E402
from easycluster_lab.report import release_name, write_between   # noqa: E402

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
SEED = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1, 10**6))
INTERVAL = (45, 90)           # seconds between two faults' starts
POLL = 4                      # seconds between the watcher's `fab status`
ATTEMPTS = 3                  # an operator's command, run again when it fails
# Seconds from the end of a fault's action (the kill, the boot, the link back, the command's
# end) until `fab status` must say healthy. A partition's includes its detection and the heal.
BOUNDS = {"kill -9": 90, "power cut": 150, "partition": 240, "bad link": 150, "rolling restart": 120,
          "add-master and remove-node": 120, "database primary power cut": 240}
NATURE = ["kill -9", "power cut", "partition", "bad link"]
OPERATOR = ["rolling restart", "add-master and remove-node"]
HELD_AT_ONCE = 2              # masters under an unrecovered fault at the same time, at most
log = load.log


@dataclass
class Fault:
    kind: str
    n: int
    host: str
    detail: str
    started: float
    overlapped: list[str]                 # faults not yet recovered when this one began
    acted: float | None = None            # its action over (host booted, link back, command done)
    recovered: float | None = None
    attempts: list[str] = field(default_factory=list)   # an operator command's failed runs
    error: str = ""

    @property
    def phase(self) -> str:
        return f"{self.kind} #{self.n}"

    @property
    def recovery(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.started


class Watcher(threading.Thread):
    """`fab status` every POLL seconds: healthy, PARTITIONED or not healthy, with when."""

    def __init__(self, soak: "Soak"):
        super().__init__(daemon=True)
        self.soak, self.samples, self.done = soak, [], threading.Event()
        self.changed = threading.Condition()

    def run(self) -> None:
        while not self.done.is_set():
            t0 = time.monotonic()
            try:
                proc = subprocess.run([str(load.FAB), "status"], cwd=load.REPO, env=self.soak.load.env(),
                                      capture_output=True, text=True, timeout=90)
                out = proc.stdout
                state = ("healthy" if proc.returncode == 0 and "cluster: healthy" in out else
                         "partitioned" if "cluster: PARTITIONED" in out else "unhealthy")
            except subprocess.TimeoutExpired:
                state = "unhealthy"
            with self.changed:
                self.samples.append((t0, time.monotonic(), state))
                self.changed.notify_all()
            self.done.wait(max(0.0, POLL - (time.monotonic() - t0)))

    def next_state(self, after: float, states: tuple[str, ...], bound: float) -> tuple[str, float] | None:
        """The first state in `states` seen by a `fab status` begun after `after` (and its
        end), within `bound` seconds; None if none was."""
        deadline = time.monotonic() + bound
        with self.changed:
            while True:
                for t0, t1, state in self.samples:
                    if t0 >= after and state in states:
                        return state, t1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(min(left, POLL))


class Soak:
    def __init__(self) -> None:
        self.load = load.Load()
        self.rng = random.Random(SEED)
        self.faults: list[Fault] = []
        self.threads: list[threading.Thread] = []
        self.operator = threading.Lock()          # one operator: one command at a time
        self.watcher = Watcher(self)
        self.state = threading.Lock()

    # ---------------------------------------------------------------- drawing faults
    def held(self) -> set[str]:
        return {f.host for f in self.faults if f.recovered is None and f.host in load.MEMBERS and not f.error}

    def draw(self) -> tuple[str, str, float]:
        """(kind, host, seconds of its action) from the seeded generator. Every draw takes the
        same numbers from it whatever the lab's state, so a seed replays the same sequence; a
        host held by an unrecovered fault is passed over for the next free one."""
        kinds = NATURE + OPERATOR + (["database primary power cut"] if load.DATABASE else [])
        kind = self.rng.choice(kinds)
        host = self.rng.choice(load.MEMBERS)
        seconds = {"power cut": self.rng.uniform(10, 40), "partition": self.rng.uniform(20, 60),
                   "bad link": self.rng.uniform(30, 60)}.get(kind, 0.0)
        if kind in NATURE:
            held = self.held()
            free = [h for h in load.MEMBERS[load.MEMBERS.index(host):] + load.MEMBERS if h not in held]
            if len(held) >= HELD_AT_ONCE or not free:
                return "", "", 0.0                # nothing to take now: this turn passes
            host = free[0]
        elif kind == "database primary power cut":
            host = self.load.db_primary()
        else:
            host = "cluster"
        return kind, host, seconds

    def inject(self, kind: str, host: str, seconds: float) -> None:
        with self.state:
            n = sum(1 for f in self.faults if f.kind == kind) + 1
            open_ = [f.phase for f in self.faults if f.recovered is None and not f.error]
            detail = f"{seconds:.0f} s" if seconds else ""
            fault = Fault(kind, n, host, detail, time.monotonic(), open_)
            self.faults.append(fault)
        self.load.probe.phase = fault.phase
        self.load.probe.phase_starts[fault.phase] = fault.started
        log(f"fault {fault.phase} on {host}{f' for {detail}' if detail else ''}"
            f"{' (while ' + ', '.join(open_) + ' recover)' if open_ else ''}")
        thread = threading.Thread(target=self.carry_out, args=(fault, seconds), daemon=True)
        thread.start()
        self.threads.append(thread)

    def carry_out(self, fault: Fault, seconds: float) -> None:
        try:
            {"kill -9": self.kill, "power cut": self.power_cut, "partition": self.partition,
             "bad link": self.bad_link, "rolling restart": self.rolling_restart,
             "add-master and remove-node": self.add_remove,
             "database primary power cut": self.db_power_cut}[fault.kind](fault, seconds)
            self.recover(fault)
        except Exception as e:            # recorded: the run fails, the others go on
            fault.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            log(f"{fault.phase}: FAILED: {e}")
        else:
            log(f"{fault.phase}: recovered {fault.recovery:.0f} s after it began")

    # ---------------------------------------------------------------- the faults
    def kill(self, fault: Fault, _s: float) -> None:
        self.load.lab.exec(fault.host, "pkill -KILL -u ejabberd -f beam.smp", check=False)
        fault.acted = time.monotonic()

    def power_cut(self, fault: Fault, seconds: float) -> None:
        self.load.lab.poweroff(fault.host)
        time.sleep(seconds)
        self.load.lab.boot(fault.host)
        fault.acted = time.monotonic()

    def partition(self, fault: Fault, seconds: float) -> None:
        self.load.lab.partition(fault.host)
        time.sleep(seconds)
        self.load.lab.heal_link(fault.host)
        fault.acted = time.monotonic()

    def bad_link(self, fault: Fault, seconds: float) -> None:
        self.load.lab.impair_link(fault.host)
        time.sleep(seconds)
        fault.detail += f", {self.load.lab.clear_link(fault.host)} packets dropped"
        fault.acted = time.monotonic()

    def db_power_cut(self, fault: Fault, _s: float) -> None:
        self.load.lab.poweroff(fault.host)
        time.sleep(40)
        self.load.lab.boot(fault.host)
        fault.acted = time.monotonic()

    def rolling_restart(self, fault: Fault, _s: float) -> None:
        self.command(fault, lambda: self.load.fab("rolling-restart", "--drain", "5", timeout=900))
        fault.acted = time.monotonic()

    def add_remove(self, fault: Fault, _s: float) -> None:
        self.command(fault, self.load.add_master)
        time.sleep(20)
        self.command(fault, self.load.remove_node)
        fault.acted = time.monotonic()

    def command(self, fault: Fault, run, first: tuple[str, ...] = ("healthy",)) -> None:
        """An operator's command: after `fab status` says one of `first` (healthy: the runbooks'
        first step; waited for up to 10 min), run again when it fails, at most ATTEMPTS times."""
        with self.operator:
            for attempt in range(1, ATTEMPTS + 1):
                self.watcher.next_state(time.monotonic(), first, 600)
                try:
                    run()
                    return
                except Exception as e:
                    text = str(e)
                    fault.attempts.append(next((line for line in text.splitlines() if line.strip()), "")[:200])
                    log(f"{fault.phase}: attempt {attempt} failed: {text[-1500:]}")
                    if "lock" in text.lower() and "held" in text.lower():   # a run of ours died holding it
                        subprocess.run([str(load.FAB), "break-lock"], cwd=load.REPO, env=self.load.env(),
                                       capture_output=True, text=True, timeout=120)
            raise RuntimeError(f"failed {ATTEMPTS} times: {fault.attempts[-1]}")

    def recover(self, fault: Fault) -> None:
        """Healthy within the bound; a partition reported meanwhile is healed as the runbook says
        (`fab heal --winner` a node that was not cut off), by the operator."""
        bound = BOUNDS[fault.kind]
        deadline = fault.acted + bound
        after = fault.acted
        while True:
            seen = self.watcher.next_state(after, ("healthy", "partitioned"), deadline - time.monotonic())
            if seen is None:
                raise RuntimeError(f"not healthy {bound} s after it ended")
            state, at = seen
            if state == "healthy":
                break
            others = [h for h in load.MEMBERS if h != fault.host]
            winner = next((h for h in others if h not in self.held()), others[0])
            self.command(fault, lambda: self.load.fab("heal", "--winner", winner), first=("partitioned", "healthy"))
            fault.detail += (", " if fault.detail else "") + f"healed (winner {winner})"
            after = time.monotonic()
        fault.recovered = at
        if fault.kind.startswith("database"):
            self.load.until(self.database_streaming, max(5.0, deadline - time.monotonic()),
                            "every database member streaming")
            fault.recovered = max(at, time.monotonic())

    def database_streaming(self) -> bool:
        try:
            listed = self.load.db_members()
        except subprocess.SubprocessError:
            return False
        return len(listed) == len(load.DB_HOSTS) and all(m["State"].lower() in ("streaming", "running")
                                                         for m in listed)

    # ---------------------------------------------------------------- the run
    async def main(self, users: list[str]) -> None:
        probe = self.load.probe = load.Probe(users, self.load.domain, {h: self.load.lab.ip(h) for h in load.MEMBERS})
        clients = asyncio.create_task(probe.run_clients())
        deadline = time.monotonic() + 120
        while probe.connected() < len(users):
            assert time.monotonic() < deadline, f"only {probe.connected()} of {len(users)} users logged in"
            await asyncio.sleep(1)
        log(f"{len(users)} users logged in; traffic {load.RATE:.0f} messages/s; seed {SEED}; {MINUTES:g} minutes")
        self.watcher.start()
        await asyncio.sleep(load.SETTLE)
        self.started = time.monotonic()
        end = self.started + MINUTES * 60
        while True:
            wait = self.rng.uniform(*INTERVAL)
            if time.monotonic() + wait > end:
                break
            await asyncio.sleep(wait)
            kind, host, seconds = self.draw()
            if kind:
                self.inject(kind, host, seconds)
            else:
                log("every master a fault may take is held: this turn passes")
        log("no more faults: waiting for every one to recover")
        for thread in self.threads:
            await asyncio.to_thread(thread.join, 900)
        await asyncio.to_thread(self.load.wait_healthy, None, 300)
        probe.phase = "after the last fault"
        probe.phase_starts[probe.phase] = time.monotonic()
        deadline = time.monotonic() + 120            # everyone back: offline messages delivered
        while probe.connected() < len(users) and time.monotonic() < deadline:
            await asyncio.sleep(1)
        await asyncio.sleep(load.SETTLE)
        self.watcher.done.set()
        probe.stop.set()
        await clients

    # ---------------------------------------------------------------- the report
    def report(self) -> tuple[str, bool]:
        probe = self.load.probe
        rows, ok = [], True
        kinds = [k for k in NATURE + OPERATOR + ["database primary power cut"] if any(f.kind == k for f in self.faults)]
        totals = {"sent": 0, "lost": 0, "bounced": 0, "duplicates": 0}
        for kind in kinds:
            faults = [f for f in self.faults if f.kind == kind]
            rs = [probe.report(f.phase, f.started, (f.recovered or time.monotonic()) + load.SETTLE) for f in faults]
            for r in rs:
                for f in r["lost_examples"]:
                    log(f"lost: {f}")
            recovered = [f for f in faults if f.recovered is not None and not f.error]
            times = sorted(f.recovery for f in recovered)
            ok &= len(recovered) == len(faults)
            sums = {k: sum(r[k] for r in rs) for k in totals}
            for k in totals:
                totals[k] += sums[k]
            reasons: dict[str, int] = {}
            for r in rs:
                for reason, c in r["bounced_by_reason"].items():
                    reasons[reason] = reasons.get(reason, 0) + c
            retried = sum(len(f.attempts) for f in faults)
            rows.append(f"| {kind} | {len(faults)} | {', '.join(sorted({f.host for f in faults}))} | "
                        f"{sum(1 for f in faults if f.overlapped)} | {len(recovered)} of {len(faults)}"
                        f"{f' ({retried} runs again)' if retried else ''} | "
                        f"{load._pct(times, 50):.0f} s | {max(times, default=0):.0f} s | {BOUNDS[kind]} s | "
                        f"{sums['sent']} | **{sums['lost']}** | {sums['bounced']}"
                        f"{' (' + ', '.join(f'{r} {c}' for r, c in reasons.items()) + ')' if reasons else ''} | "
                        f"{sums['duplicates']} | {max((r['no_service_p99'] for r in rs), default=0):.0f} s |")
        # messages sent before the first fault and after the last one
        for phase in ("warm-up", "after the last fault"):
            r = probe.report(phase, 0, 0)
            for k in totals:
                totals[k] += r[k]
        ok &= totals["lost"] == 0
        failures = [f"{f.phase} on {f.host}: {f.error}" for f in self.faults if f.error]
        lines = [f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `make soak`: {MINUTES:g} minutes of "
                 f"faults, seed **{SEED}** (`SOAK_SEED={SEED} make soak` draws the same ones), {load.USERS} users, "
                 f"{load.RATE:.0f} messages/s, lab {load.LAB} (3 masters and a spare, systemd hosts"
                 f"{', the data in a replicated PostgreSQL' if load.DATABASE else ''}), Debian "
                 f"{release_name(load.RELEASE)}. {len(self.faults)} faults, "
                 f"{sum(1 for f in self.faults if f.overlapped)} of them begun while another was still recovering.",
                 "",
                 f"**{totals['sent']} messages sent: {totals['lost']} unaccounted**, {totals['bounced']} bounced with "
                 f"their reason, {totals['duplicates']} delivered twice; every other one delivered (live or from "
                 "offline storage).", "",
                 "| fault | times | hosts | begun while another recovered | recovered within the bound | "
                 "recovery p50 | max | bound | messages sent | unaccounted | bounced (reason) | duplicates | "
                 "no service p99 (worst) |",
                 "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, ""]
        lines.append("Recovery: from the fault's start until `fab status` (polled every "
                     f"{POLL} s) said healthy after its action ended; the bound counts from that end.")
        if failures:
            lines += ["", "Not recovered:", *[f"- {f}" for f in failures]]
        lines += ["", "<details><summary>The faults in the order drawn</summary>", ""]
        for f in self.faults:
            at = f.started - self.started
            lines.append(f"- +{int(at // 60)}:{int(at % 60):02d} {f.phase} on {f.host}"
                         f"{' (' + f.detail + ')' if f.detail else ''}"
                         f"{' while ' + ', '.join(f.overlapped) + ' recovered' if f.overlapped else ''}: "
                         + (f"recovered after {f.recovery:.0f} s" if f.recovery is not None and not f.error
                            else f"NOT recovered: {f.error}")
                         + (f"; run again after: {'; '.join(f.attempts)}" if f.attempts else ""))
        lines += ["", "</details>"]
        return "\n".join(lines), ok


def main() -> int:
    soak = Soak()
    log(f"seed {SEED} (SOAK_SEED={SEED} repeats these faults)")
    users = soak.load.setup()
    try:
        asyncio.run(soak.main(users))
    finally:
        soak.watcher.done.set()
        if not load.KEEP:
            soak.load.lab.down(purge=False)
    text, ok = soak.report()
    marker = f"SOAK {load.RELEASE}" + (f" {load.DATABASE}" if load.DATABASE else "")
    write_between(load.DOC, f"<!-- {marker} -->", f"<!-- /{marker} -->", text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
