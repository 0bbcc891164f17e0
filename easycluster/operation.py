"""The operation layer: one way to run a command. What every command shares is owned here, so
a command is only its own decisions and steps:

    def rolling_restart(inv, *, out=print, dry=False, lock_wait=0, drain=5):
        with operation(inv, "rolling-restart", out=out, lock_wait=lock_wait) as op:
            health = op.observe()                          # facts -> health; departed nodes dropped
            todo = refusals.rolling_restart(op.inv, health)   # the rules: pure, case tables
            if op.dry_run(dry, ...):                       # --dry: what would be done, nothing changed
                return health
            with op.lock():                                # the cluster lock, waiting up to lock_wait
                with op.progress.step(host, "start"):      # [host] start: ok (1.2s)
                    ...

- progress: per-host prefixed lines with timings (progress.Progress), phases for the summary;
- the fleet: one SSH connection per host for the whole run (remote.Fleet), closed at the end;
- the facts (`look`: every host's, and the database as each node sees it) or the cluster's
  health (`observe`), read in parallel, one command per host;
- departed nodes (removed or forgotten on purpose): dropped from `op.inv`, the nodes the
  command works on; `op.declared` is the inventory as written;
- the lock (`lock`): every host's piece of the cluster lock, named after the command, waiting
  up to the operator's --lock-wait for another change to finish;
- the summary (`summary`): members, masters, health, and the time of each phase.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

from . import monitorctl, probe
from .facts import HostFacts
from .health import ClusterHealth, without_departed
from .inventory import Inventory, Node
from .lock import ClusterLock
from .monitoring import MonitorStep, format_monitor_plan, monitor_plan, targets
from .plan import DbView
from .progress import Out, Progress, count
from .remote import Fleet, Host
from .secrets import Secret

BACK_BOUND = 180   # seconds for a restarted node to be back with all tables


def _quiet(_line: str) -> None:
    pass


@dataclass
class Operation:
    """One command's run. `inv`: the nodes it works on (the declared ones, without those taken
    out on purpose, once facts or health were read)."""
    name: str
    declared: Inventory
    out: Out
    progress: Progress
    fleet: Fleet
    lock_wait: float = 0
    inv: Inventory = field(init=False)
    facts: dict[str, HostFacts] = field(default_factory=dict)
    db: DbView | None = None

    def __post_init__(self) -> None:
        self.inv = self.declared

    # ---- looking
    def look(self, password: Secret | None = None, *, network: bool = True, report_departed: bool = False,
             via: bool = True, phase: str | None = "facts") -> dict[str, HostFacts]:
        """Every host's facts (with a password: and the database as each node sees it), all at
        once; `op.inv` then holds the nodes not taken out on purpose (`report_departed`: each
        one so dropped is named in the output). `via`: every member's status asked from one node
        (probe.gather_via) rather than one call per host."""
        def read() -> None:
            if via or password is not None:
                self.facts, self.db = probe.gather_all(self.fleet, password, network)
            else:
                self.facts, self.db = probe.gather(self.fleet, probe_network=network), None
        if phase:
            with self.progress.phase(phase):
                read()
        else:
            read()
        self.inv = without_departed(self.declared, self.facts, self.out if report_departed else _quiet)
        return self.facts

    def observe(self) -> ClusterHealth:
        """The cluster's health now; `op.inv` then holds the nodes not taken out on purpose."""
        health = probe.observe(self.declared, self.fleet)
        self.inv = replace(self.declared, nodes=tuple(n for n in self.declared.nodes if n.name not in health.departed))
        return health

    def wait_back(self, node: Node, bound: float = BACK_BOUND) -> ClusterHealth:
        """Until every node runs, sees every other running, and is a master again (the declared
        inventory is watched: departed nodes are listed as such, not waited for)."""
        return probe.wait_for(self.declared, self.fleet, lambda h: h.healthy, bound,
                              f"{node.name} back in the cluster", interval=0.5)

    # ---- changing
    def lock(self, hosts: list[str] | None = None, what: str | None = None) -> ClusterLock:
        """The cluster lock on `hosts` (default: every host of the fleet), held as `what`
        (default: the command's name), waiting up to the operator's --lock-wait."""
        return ClusterLock(self.fleet, list(self.fleet.hosts) if hosts is None else hosts, what or self.name,
                           self.lock_wait)

    def dry_run(self, dry: bool, *would: str) -> bool:
        """With --dry: say what the command would do and that nothing changed (True)."""
        if dry:
            for line in would:
                self.out(line)
            self.out("dry run: nothing was changed")
        return dry

    # ---- the monitoring host (cluster.monitoring)
    def _watchers(self) -> tuple[Host, list[Host]]:
        """The monitoring host, and the database hosts whose node-exporter it scrapes."""
        db = self.declared.cluster.database
        return self.fleet.monitoring_host(), (self.fleet.database_hosts() if db and db.provisioned else [])

    def monitoring_plan(self, nodes: Inventory | None = None) -> list[MonitorStep]:
        """What the monitoring host (and node-exporter on the database hosts) needs for
        Prometheus to scrape `nodes`' nodes (default: op.inv, the nodes not taken out on
        purpose): one command on each, at once. None without cluster.monitoring."""
        if not self.declared.cluster.monitoring:
            return []
        facts = monitorctl.probe_all(*self._watchers())
        return monitor_plan(self.declared, facts, targets(nodes or self.inv))

    def show_monitoring(self, steps: list[MonitorStep]) -> None:
        if steps:
            self.out(format_monitor_plan(steps))

    def update_monitoring(self, nodes: Inventory | None = None, steps: list[MonitorStep] | None = None) -> None:
        """The monitoring made to watch `nodes`' nodes (steps: a plan already made and shown)."""
        if steps is None:
            steps = self.monitoring_plan(nodes)
            self.show_monitoring(steps)
        if steps:
            with self.progress.phase("monitoring"):
                monitorctl.apply(*self._watchers(), steps, self.progress)

    # ---- the end
    def summary(self, health: ClusterHealth) -> None:
        summary(self.out, health, self.progress)


@contextmanager
def operation(inv: Inventory, name: str, *, out: Out = print, lock_wait: float = 0) -> Iterator[Operation]:
    """A command's run: its progress and its fleet (one connection per host, all closed at the end)."""
    progress = Progress(out)
    with Fleet(inv) as fleet:
        yield Operation(name, inv, out, progress, fleet, float(lock_wait))


def summary(out: Out, health: ClusterHealth, progress: Progress) -> None:
    """The last lines of a run that changed the cluster: members, masters, health; phase times."""
    members = [n.name for n in health.nodes if n.member]
    masters = [n.name for n in health.nodes if n.master and not n.satellite]
    satellites = [n.name for n in health.nodes if n.satellite and n.in_role]
    out(f"cluster: {count(len(members), 'member')}, {count(len(masters), 'master')}"
        + (f", {count(len(satellites), 'satellite')}" if any(n.satellite for n in health.nodes) else "")
        + f" ({'healthy' if health.healthy else 'NOT healthy'})")
    timings = ", ".join(f"{name} {secs:.1f}s" for name, secs in progress.phases)
    out(f"time: {time.monotonic() - progress.start:.1f}s ({timings})")
