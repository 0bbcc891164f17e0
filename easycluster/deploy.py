"""`fab deploy`: inventory -> facts -> plan -> apply -> verify.

Independent per-host work runs on all hosts at once; restarts and mnesia joins
run strictly one node at a time. The first failure stops the run, naming host,
step and cause.
"""

from __future__ import annotations

import secrets as _random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from . import facts as factmod
from . import nodectl
from .errors import EasyClusterError
from .health import ClusterHealth, assess
from .inventory import Inventory
from .plan import (INSTALL, JOIN, PLUGIN, RELOAD, RESTART, START, WRITE, Plan, PreflightFailed,
                   format_plan, make_plan, plan_joins)
from .remote import Fleet, Host, RemoteError
from .secrets import COOKIE_ALPHABET, Secret, load_cookie

Out = Callable[[str], None]


class StepFailed(EasyClusterError):
    def __init__(self, host: str, step: str, cause: str):
        self.host, self.step, self.cause = host, step, cause
        super().__init__(f"[{host}] {step} failed: {cause}")


class Progress:
    """Per-host prefixed progress lines with timings; records how long each phase took."""

    def __init__(self, out: Out):
        self._out = out
        self._lock = threading.Lock()
        self.start = time.monotonic()
        self.phases: list[tuple[str, float]] = []

    def say(self, host: str, message: str) -> None:
        with self._lock:
            self._out(f"[{host}] {message}")

    def step(self, host: Host, what: str, func: Callable[[], object]) -> object:
        t0 = time.monotonic()
        try:
            result = func()
        except RemoteError as exc:
            self.say(host.name, f"{what}: FAILED after {time.monotonic() - t0:.1f}s")
            raise StepFailed(host.name, what, exc.detail or exc.what) from None
        self.say(host.name, f"{what}: ok ({time.monotonic() - t0:.1f}s)")
        return result

    def phase(self, name: str, func: Callable[[], object]) -> object:
        t0 = time.monotonic()
        try:
            return func()
        finally:
            self.phases.append((name, time.monotonic() - t0))


@dataclass
class DeployResult:
    plan: Plan
    health: ClusterHealth | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=dict)


def _each(fleet: Fleet, hosts: list[str], func: Callable[[Host], object]) -> None:
    """Run func on these hosts at once; after all finish, raise the first failure."""
    results = fleet.parallel(func, hosts)
    for h in hosts:
        if isinstance(results[h], Exception):
            raise results[h]


def deploy(inv: Inventory, dry: bool = False, out: Out = print) -> DeployResult:
    progress = Progress(out)
    cookie = _cookie_for(inv, dry)
    with Fleet(inv) as fleet:
        facts = progress.phase("facts", lambda: factmod.gather(fleet))
        plan = make_plan(inv, facts, cookie)
        if plan.problems:
            raise PreflightFailed(plan.problems)
        if dry:
            out(format_plan(plan, inv))
            out("dry run: nothing was changed")
            return DeployResult(plan, phases=progress.phases, connections=fleet.connections_opened())
        if not plan.changes:
            health = assess(inv, facts)
            out(format_plan(plan, inv))
            _summary(out, health, progress)
            if not health.healthy:
                raise EasyClusterError("the cluster is not healthy:\n  " + "\n  ".join(health.problems))
            return DeployResult(plan, health, progress.phases, fleet.connections_opened())
        out(format_plan(plan, inv))
        health = progress.phase("apply", lambda: _apply(inv, fleet, plan, facts, progress))
        _summary(out, health, progress)
        return DeployResult(plan, health, progress.phases, fleet.connections_opened())


def _cookie_for(inv: Inventory, dry: bool) -> Secret:
    if dry and inv.cluster.cookie_file and not inv.cluster.cookie_file.exists():
        # a dry run creates nothing: show the cookie as "created" without making the file
        return Secret("".join(_random.choice(COOKIE_ALPHABET) for _ in range(48)))
    return load_cookie(inv.cluster, create=not dry)


def _apply(inv: Inventory, fleet: Fleet, plan: Plan, facts, progress: Progress) -> ClusterHealth:
    version = inv.cluster.ejabberd_version
    installs = plan.hosts_with(INSTALL)
    if installs:
        progress.phase("install", lambda: _each(fleet, installs, lambda h: progress.step(
            h, f"install ejabberd {version}", lambda: nodectl.install(h, version))))

    configure = sorted(set(plan.hosts_with(WRITE) + plan.hosts_with(PLUGIN)), key=_order(inv))
    if configure:
        def configure_one(h: Host) -> None:
            files = [s.file for s in plan.steps if s.kind == WRITE and s.host == h.name]
            plugin = h.name in plan.hosts_with(PLUGIN)
            what = ", ".join([f.path.rsplit("/", 1)[-1] for f in files] + (["plugin"] if plugin else []))
            backups = progress.step(h, f"write {what}", lambda: nodectl.configure(h, files, plugin))
            for b in backups:
                progress.say(h.name, f"  previous version kept in {b}")
        progress.phase("configure", lambda: _each(fleet, configure, configure_one))

    reloads = plan.hosts_with(RELOAD)
    if reloads:
        progress.phase("reload", lambda: _each(fleet, reloads, lambda h: progress.step(
            h, "reload ejabberd.yml", lambda: nodectl.reload_config(h))))

    starts = plan.hosts_with(START)
    if starts:
        progress.phase("start", lambda: _each(fleet, starts, lambda h: progress.step(
            h, "start", lambda: nodectl.start(h, inv.cluster.c2s_port))))

    for host in plan.hosts_with(RESTART):   # one at a time: the cluster stays up
        h = fleet[host]
        progress.phase(f"restart {host}", lambda: _restart_and_rejoin(inv, fleet, h, progress))

    joins = plan.by_kind(JOIN)
    if starts or plan.hosts_with(RESTART):
        # membership of nodes that were down is known only now that they run
        fresh = factmod.gather(fleet, probe_network=False)
        joins, problems = plan_joins(inv, fresh)
        if problems:
            raise PreflightFailed(problems)
    for step in joins:                      # strictly one at a time, in inventory order
        h = fleet[step.host]
        progress.phase(f"join {step.host}", lambda: _join_and_verify(inv, fleet, h, step.seed, progress))

    final = progress.phase("verify", lambda: factmod.gather(fleet, probe_network=False))
    health = assess(inv, final)
    if not health.healthy:
        raise EasyClusterError("deploy finished but the cluster is not healthy:\n  " + "\n  ".join(health.problems))
    return health


def _order(inv: Inventory):
    index = {n.host: i for i, n in enumerate(inv.nodes)}
    return lambda host: index[host]


def _restart_and_rejoin(inv: Inventory, fleet: Fleet, h: Host, progress: Progress) -> None:
    before = nodectl.status(h)
    peers = set(before.get("running_db_nodes", [])) if before else set()
    progress.step(h, "restart", lambda: nodectl.restart(h, inv.cluster.c2s_port))
    progress.step(h, "back in the cluster with all tables", lambda: nodectl.wait_status(
        h, lambda st: peers <= set(st.get("running_db_nodes", [])) and not st.get("missing_tables")))


def _join_and_verify(inv: Inventory, fleet: Fleet, h: Host, seed: str, progress: Progress) -> None:
    answer = progress.step(h, f"join_as_master {seed}", lambda: nodectl.join_as_master(h, seed))
    steps = ", ".join(f"{s.get('step')} {s.get('ms', 0)}ms" for s in answer.get("steps", []))
    if steps:
        progress.say(h.name, f"  {steps}")
    # Every member must now see the node running, and it must hold every table.
    members = [n.host for n in inv.nodes]
    statuses = fleet.parallel(nodectl.status, members)
    joined = inv.node(h.name).name
    for host, st in statuses.items():
        if isinstance(st, dict) and st.get("db_nodes") and joined not in st.get("running_db_nodes", []):
            if seed in st.get("db_nodes", []):
                raise StepFailed(host, f"verify join of {joined}", f"{host} does not see {joined} running")
    mine = statuses[h.name]
    if not isinstance(mine, dict) or not mine.get("master"):
        missing = mine.get("missing_tables") if isinstance(mine, dict) else "status unavailable"
        raise StepFailed(h.name, f"verify join of {joined}", f"not a master: missing {missing}")
    progress.say(h.name, f"verified: in every member's running_db_nodes, local copy of "
                         f"{len(mine.get('tables', {}))} tables")


def _summary(out: Out, health: ClusterHealth, progress: Progress) -> None:
    members = [n.name for n in health.nodes if n.member]
    masters = [n.name for n in health.nodes if n.master]
    out(f"cluster: {len(members)} members, {len(masters)} masters"
        f" ({'healthy' if health.healthy else 'NOT healthy'})")
    timings = ", ".join(f"{name} {secs:.1f}s" for name, secs in progress.phases)
    out(f"time: {time.monotonic() - progress.start:.1f}s ({timings})")
