"""`fab upgrade`: the running cluster to the ejabberd version the inventory pins, up or down.

inventory -> facts -> plan -> apply -> verify, as deploy:
- Facts: deploy's, plus per host (one script: upgrade_facts.sh) whether the pinned version
  installs (apt-get's simulation), the room for a copy of the Mnesia directory, and from one
  node the records of the running tables and those the pinned version's headers define.
- Plan (plan_upgrade, pure): the strategy and its reason. A replicated table whose record
  differs between the two versions is transformed by the new version at its start, and Mnesia
  transforms a table only with every copy active and on every node at once: a node of the old
  version holding it breaks (ejabberd #4374). So:
    rolling    no table's record changes: one node at a time, drained, stopped, upgraded,
               started, back with every table before the next; the cluster serves throughout.
    full stop  a record changes: every node stopped (the first of the inventory last), a copy
               of each Mnesia directory taken while stopped (the way back), every node
               upgraded, then all started held (the plugin's boot_hold) so that the node that
               stopped last transforms the tables alone once every copy is loaded. The outage
               is measured and printed.
- Apply: a full Mnesia backup first; the first failure stops the run and says where it is and
  what the way back is.
- Verify: every node runs the pinned version, healthy.

The way back: after a rolling upgrade, `fab upgrade` with the old version pinned (the same
rule applies: nothing changed, so it rolls). After a full stop, `fab upgrade --revert`: with
the old version pinned, every node stopped, the old package installed again and each Mnesia
directory put back as copied during the upgrade (writes since then are lost), then started.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .. import database, membership, nodectl, probe, releases, sql
from ..apply import PluginBuilds
from ..errors import EasyClusterError, PreflightFailed
from ..facts import HostFacts
from ..health import MIXED, MIXED_RELEASES, ClusterHealth, assess
from ..inventory import Inventory, Node
from ..operation import operation
from ..paths import OS_MOVE as OS_MOVE_MARKER, OS_MOVE_COPY_DIR, STOP_ORDER
from ..plan import Problem, dist_address, file_change, members_of, packages
from ..progress import Out, Progress, count
from .. import refusals
from ..refusals import TableChange, compare_records
from ..remote import Fleet, Host
from ..render import managed_files, release
from ..scripts import render
from ..secrets import Secret, load_cookie, load_password
from ..probe import wait_for
from ..tls import materials as tls_materials

ROLLING, FULL_STOP, OS_MOVE = "rolling", "full stop", "os move"
BACK_BOUND = 300           # seconds for an upgraded node (or the cluster) to be back


# --------------------------------------------------------------------------- facts

@dataclass
class UpgradeFacts:
    """What upgrade_facts.sh found on one host."""
    host: str
    installable: bool = False
    install_error: str = ""
    changes: list[str] = field(default_factory=list)      # packages apt would install or upgrade
    mnesia_bytes: int = 0
    free_bytes: int = 0
    tables: dict | None = None     # table -> {record_name, attributes, size, copies} (the running node's)
    records: dict | None = None    # record -> [fields], from the pinned version's headers
    records_error: str = ""
    copies: dict[str, str] = field(default_factory=dict)  # stamp -> version: a full stop's copies here
    error: str = ""


def parse_upgrade_facts(host: str, text: str) -> UpgradeFacts:
    uf = UpgradeFacts(host)
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if line.startswith(("tables:", "records:")):
            name, _, payload = line.partition(":")
            answer = nodectl.last_json(payload)
            if name == "tables":
                uf.tables = answer.get("tables")
            elif answer.get("ok"):
                uf.records = answer.get("records")
            else:
                uf.records_error = str(answer.get("reason") or payload.strip()[:300])
        elif line.startswith("copy:"):
            stamp, _, version = line[5:].partition("=")
            uf.copies[stamp] = version
        elif not sep:
            continue
        elif key == "installable":
            uf.installable = value == "yes"
        elif key == "install_error":
            uf.install_error = value.strip()
        elif key == "changes":
            uf.changes = value.split()
        elif key in ("mnesia_bytes", "free_bytes"):
            setattr(uf, key, int(value) if value.isdigit() else 0)
        elif key == "records_error":
            uf.records_error = value
    if "end=1" not in text.splitlines():
        uf.error = "the host's answer ended early"
    return uf


def gather_upgrade_facts(fleet: Fleet, version: str, ask: str, moves: dict[str, tuple[str, str]] | None = None
                         ) -> dict[str, UpgradeFacts]:
    """Each host's upgrade facts; a host the upgrade moves to another release (`moves`:
    refusals.os_moves) is asked with apt pointed at that release."""
    moves = moves or {}

    def one(h: Host) -> UpgradeFacts:
        move_to = releases.codename(moves[h.name][1]) if h.name in moves else ""
        r = h.script(render("upgrade_facts", version=version, records=h.name == ask, move_to=move_to),
                     what="reading the upgrade's facts", timeout=300)
        return parse_upgrade_facts(h.name, r.stdout)
    results = fleet.parallel(one)
    return {h: (r if isinstance(r, UpgradeFacts) else UpgradeFacts(h, error=str(r))) for h, r in results.items()}


# --------------------------------------------------------------------------- plan (pure)

@dataclass
class UpgradePlan:
    target: str
    current: dict[str, str]                    # host -> installed version
    strategy: str | None = None                # ROLLING | FULL_STOP; None: nothing to do
    reason: str = ""
    changed: list[TableChange] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)   # tables whose record the target's headers lack
    compared: int = 0
    order: list[str] = field(default_factory=list)     # hosts: rolling order, or the stop order
    packages: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[tuple[str, str]]] = field(default_factory=dict)   # host -> (path, diff): per version
    problems: list[Problem] = field(default_factory=list)
    moves: dict[str, tuple[str, str]] = field(default_factory=dict)   # host -> (release, release): OS moves
    resumed: list[str] = field(default_factory=list)   # hosts whose move was cut off: finished first
    sql_steps: list[tuple[int, int]] = field(default_factory=list)   # the database's schema steps (full stop)

    @property
    def changes(self) -> bool:
        return self.strategy is not None


def plan_upgrade(inv: Inventory, facts: dict[str, HostFacts], ufacts: dict[str, UpgradeFacts],
                 health: ClusterHealth) -> UpgradePlan:
    """From the inventory (its pinned version), deploy's facts, the upgrade's facts and the
    cluster's health: the strategy and its reason, the order, or the problems."""
    target = inv.cluster.ejabberd_version
    current = {n.host: facts[n.host].ejabberd_version or "-" for n in inv.nodes}
    plan = UpgradePlan(target, current)
    plan.moves = refusals.os_moves(inv, facts)
    plan.resumed = [h for h in plan.moves if facts[h].os_move]
    to_move = [n.host for n in inv.nodes if current[n.host] != target or n.host in plan.moves]
    if not to_move:
        return plan
    plan.problems = refusals.upgrade(inv, facts, ufacts, health)
    for node in inv.nodes:
        uf = ufacts.get(node.host)
        if uf is not None and not uf.error:
            plan.packages[node.host] = uf.changes
    if plan.problems:
        return plan
    ask = refusals.records_answer(ufacts)
    plan.changed, plan.unknown, plan.compared = compare_records(ask.tables, ask.records,
                                                                (target, *(current[h] for h in to_move)))
    first = inv.nodes[0].host
    if plan.moves:
        if plan.changed:
            plan.problems.append(Problem("cluster", "tables", "the record of " + "; ".join(
                c.describe() for c in plan.changed) + f" differs in ejabberd {target}: an OS move keeps "
                "ejabberd's version", "move the OS with the build of the ejabberd version the cluster runs"))
            return plan
        plan.strategy = OS_MOVE
        pairs = sorted({(facts[h].os_release, v[1]) for h, v in plan.moves.items() if h not in plan.resumed})
        plan.reason = ("; ".join(f"{was} -> Debian {to} ({releases.codename(to)})" for was, to in pairs) or
                       "a move cut off half-way") + \
            (f", ejabberd {releases.upstream(target)} on both sides, Mnesia protocol "
             f"{releases.MNESIA_PROTOCOL.get(next(iter(plan.moves.values()))[1])} on both, no table's record "
             f"differs ({count(plan.compared, 'table')} compared): node by node, each drained, stopped, "
             "moved and rebooted, back with every table before the next; the cluster serves throughout")
        rest = [h for h in (n.host for n in inv.nodes) if h in to_move and h not in plan.resumed]
        plan.order = plan.resumed + [h for h in rest if h != first] + ([first] if first in rest else [])
        return plan
    if inv.cluster.database:
        plan.sql_steps = refusals.sql_schema_steps(target, [current[h] for h in to_move])[0]
    if plan.changed or plan.sql_steps:
        plan.strategy = FULL_STOP
        reasons = []
        if plan.changed:
            reasons.append("the record of " + "; ".join(c.describe() for c in plan.changed) +
                           f" differs in ejabberd {target}: the new version transforms it at start, which "
                           "Mnesia does with every copy loaded and on every node at once (a node of the old "
                           "version holding it breaks: ejabberd #4374)")
        if plan.sql_steps:
            reasons.append(f"the database takes ejabberd's schema steps ({refusals.describe_steps(plan.sql_steps)}),"
                           f" which the older version cannot write to: applied once, with every node stopped, "
                           f"before the first node of {target} starts")
        plan.reason = "; and ".join(reasons)
        plan.order = [n.host for n in reversed(inv.nodes)]          # the first node stops last
    else:
        plan.strategy = ROLLING
        plan.reason = (f"no table's record differs between the running version and {target} "
                       f"({count(plan.compared, 'table')} compared)")
        plan.order = [h for h in (n.host for n in inv.nodes) if h != first and h in to_move] + \
                     ([first] if first in to_move else [])
    return plan


def version_files(inv: Inventory, facts: dict[str, HostFacts], plan: UpgradePlan, cookie: Secret,
                  tls) -> dict[str, list[tuple[str, str]]]:
    """Per host to upgrade: the managed files that render differently for the pinned version
    (templates compare ejabberd_release), with their diffs (a secret's: a note)."""
    members = members_of(inv, facts)
    found = {}
    for host in plan.order:
        node = inv.node(host)
        found[host] = [(mf.path, diff) for mf in _changed_files(inv, node, facts, cookie, tls, members)
                       for diff in [file_change(mf, facts[host])]]
    return found


def _changed_files(inv: Inventory, node: Node, facts: dict[str, HostFacts], cookie: Secret, tls,
                   members: list[str]) -> list:
    return [mf for mf in managed_files(inv, node, dist_address(node, facts) or "", cookie,
                                       (tls or {}).get(node.name), members)
            if file_change(mf, facts[node.host]) is not None]


def format_upgrade_plan(plan: UpgradePlan, inv: Inventory) -> str:
    if not plan.changes:
        return f"no changes: every node runs ejabberd {plan.target}"
    out = []
    for node in inv.nodes:
        was = plan.current[node.host]
        if was == plan.target and node.host not in plan.moves:
            out.append(f"[{node.host}] ejabberd {was}: already the pinned version")
            continue
        pkgs = plan.packages.get(node.host) or []
        if node.host in plan.moves:
            now, to = plan.moves[node.host]
            out.append(f"[{node.host}] Debian {now} -> Debian {to} ({releases.codename(to)}), ejabberd {was} -> "
                       f"{plan.target}" + (" (a move cut off half-way: finished first)" if node.host in plan.resumed
                                           else f" ({len(pkgs)} packages upgraded or installed)" if pkgs else ""))
        else:
            out.append(f"[{node.host}] ejabberd {was} -> {plan.target}"
                       + (f" ({len(pkgs)} packages: {' '.join(pkgs)})" if pkgs else ""))
        for path, diff in plan.files.get(node.host, []):
            out.append(f"[{node.host}]   {path}: for {plan.target}")
            out.extend(f"[{node.host}]     {line}" for line in diff.rstrip("\n").splitlines())
        out.append(f"[{node.host}]   the plugin: rebuilt against {plan.target}'s headers")
    out.append(f"strategy: {plan.strategy}: {plan.reason}")
    if plan.unknown:
        out.append(f"  not in {plan.target}'s headers (record defined in its code; not compared): "
                   f"{', '.join(plan.unknown)}")
    if plan.strategy == OS_MOVE:
        out.append("  order: " + ", ".join(plan.order) + " (one at a time: drained, stopped, its Mnesia directory "
                   "copied, apt's sources moved, openssh-server first, full-upgrade keeping configuration files, "
                   "files and plugin for the new release, reboot, back with every table)")
    elif plan.strategy == ROLLING:
        out.append("  order: " + ", ".join(plan.order) + " (one at a time: drained, stopped, upgraded, "
                   "started, back with every table)")
    else:
        out.append("  stop order: " + ", ".join(plan.order) + f"; {plan.order[-1]} stops last and starts first; "
                   "each Mnesia directory is copied while stopped (the way back: `fab upgrade --revert`)")
        if plan.sql_steps:
            out.append(f"  database: with every node stopped, a pg_dump (the way back across the steps), then the "
                       f"schema steps {', '.join(map(sql.label, plan.sql_steps))} in one transaction "
                       "(those the database has already are skipped)")
    out.append("  first: a full Mnesia backup")
    return "\n".join(out)


# --------------------------------------------------------------------------- apply

@dataclass
class UpgradeResult:
    plan: UpgradePlan
    health: ClusterHealth | None = None
    outage: float | None = None        # full stop: seconds no node served
    phases: list[tuple[str, float]] = field(default_factory=list)


def upgrade(inv: Inventory, *, out: Out = print, dry: bool = False, lock_wait: float = 0) -> UpgradeResult:
    cookie = load_cookie(inv.cluster, create=False)
    tls = tls_materials(inv, create=False)
    with operation(inv, "upgrade", out=out, lock_wait=lock_wait) as op:
        progress = op.progress
        facts = op.look(network=False, report_departed=True)
        effective = op.inv
        fleet = op.fleet.subset(effective)
        health = assess(effective, facts)
        ask = effective.nodes[0].host
        with progress.phase("upgrade facts"):
            ufacts = gather_upgrade_facts(fleet, inv.cluster.ejabberd_version, ask,
                                          refusals.os_moves(effective, facts))
        plan = plan_upgrade(effective, facts, ufacts, health)
        if plan.problems:
            raise PreflightFailed(plan.problems)
        plan.files = version_files(effective, facts, plan, cookie, tls)
        out(format_upgrade_plan(plan, effective))
        if dry or not plan.changes:
            op.dry_run(dry)
            return UpgradeResult(plan, health, phases=progress.phases)
        with op.lock(list(fleet.hosts)):
            if plan.strategy != OS_MOVE:
                with progress.phase("download"):   # while every node still serves: the installs are local
                    fleet.each([h for h in plan.order], lambda h: nodectl.install(h, plan.target, download_only=True,
                                                                                       extra=packages(inv)))
                progress.say("cluster", f"packages of ejabberd {plan.target} downloaded on {', '.join(plan.order)}")
            with progress.phase("backup"):
                membership.backup(effective, fleet, ask, progress.say)
            apply = _Upgrade(effective, fleet, facts, plan, progress, cookie, tls)
            try:
                health = apply.full_stop() if plan.strategy == FULL_STOP else apply.rolling()
            except Exception as exc:
                raise EasyClusterError(f"{exc}\n{apply.where_it_stopped()}") from None
        moved = [n.name for n in health.nodes if n.ejabberd_version != plan.target]
        if moved or not health.healthy:
            raise EasyClusterError("the upgrade finished but the cluster is not as pinned:\n  " +
                                   "\n  ".join(health.problems + [f"{n} does not run {plan.target}" for n in moved]))
        if apply.outage is not None:
            out(f"outage: {apply.outage:.1f}s with no node serving (from the last stop to the first node "
                f"serving again); every node back {apply.all_back:.1f}s after the last stop")
        out(f"cluster: {len(health.nodes)} nodes on ejabberd {plan.target} (healthy)")
        timings = ", ".join(f"{name} {secs:.1f}s" for name, secs in progress.phases)
        out(f"time: {time.monotonic() - progress.start:.1f}s ({timings})")
        return UpgradeResult(plan, health, apply.outage, progress.phases)


class _Upgrade:
    """One run's apply; remembers how far it got, for the report of a failure."""

    def __init__(self, inv: Inventory, fleet: Fleet, facts: dict[str, HostFacts], plan: UpgradePlan,
                 progress: Progress, cookie: Secret, tls):
        self.inv, self.fleet, self.facts, self.plan, self.progress = inv, fleet, facts, plan, progress
        self.cookie, self.tls = cookie, tls
        self.members = members_of(inv, facts)
        self.upgraded: list[str] = []
        self.stopped: list[str] = []
        self.brought_back: list[str] = []   # rolling: failed, and back on the version they ran before
        self.stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.outage: float | None = None
        self.all_back: float = 0.0
        self.dump: str | None = None        # the database's pg_dump before its schema steps
        # the plugin, rebuilt against the new version's headers: compiled on the first host
        # configured (the first upgraded; a full stop's first to start), its beam installed on
        # the hosts with the same packages, as deploy does (apply.PluginBuilds)
        self.plugin = PluginBuilds(plan.order[0] if plan.order else None)

    # ---- one host's package and files
    def install(self, h: Host) -> None:
        with self.progress.step(h.name, f"install ejabberd {self.plan.target}"):
            nodectl.install(h, self.plan.target, extra=packages(self.inv))
        self.upgraded.append(h.name)

    def move(self, h: Host, move: tuple[str, str]) -> None:
        """The host's OS to the next release, with the pinned ejabberd (os_move.sh); its node
        enabled again, started by the reboot that follows."""
        now, to = move
        was = releases.codename(now) if now in releases.DEBIAN else now
        with self.progress.step(h.name, f"move to Debian {to} ({releases.codename(to)}) with ejabberd {self.plan.target}"):
            done = nodectl.os_move(h, was, releases.codename(to), self.plan.target, self.stamp, extra=packages(self.inv))
        self.progress.say(h.name, f"  Mnesia directory copied to {done.get('copy', '?')}; now "
                                  f"{done.get('release', '?')}, ejabberd {done.get('version', '?')}")
        self.upgraded.append(h.name)

    def configure(self, h: Host) -> None:
        """The files that differ for the version now installed, and the plugin rebuilt against
        its headers (compiled once: hosts with the same packages take that beam)."""
        files = _changed_files(self.inv, h.node, self.facts, self.cookie, self.tls, self.members)
        what = ", ".join([mf.path.rsplit("/", 1)[-1] for mf in files] + ["plugin (rebuilt)"])
        self.plugin.configure(h, files, True, self.progress, f"write {what}")

    # ---- rolling
    def rolling(self) -> ClusterHealth:
        health = None
        for host in self.plan.order:
            with self.progress.phase(f"upgrade {host}"):
                health = self._roll_one(self.fleet[host])
        with self.progress.phase("verify"):
            return wait_for(self.inv, self.fleet, lambda hh: hh.healthy, BACK_BOUND, "healthy", interval=0.5) \
                if health is None or not health.healthy else health

    def _roll_one(self, h: Host) -> ClusterHealth:
        """One node of a rolling upgrade: drained, stopped, upgraded, started, back with every
        table. When a step fails, the node is brought back on what it ran before where possible
        (_bring_back), and the failure is raised: the run still fails."""
        at = STOP
        move = self.plan.moves.get(h.name)
        try:
            with self.progress.step(h.name, "drain (5s) and stop"):
                nodectl.drain_and_stop(h, 5)
            self.stopped.append(h.name)
            at = INSTALL
            if move:
                self.move(h, move)
            else:
                self.install(h)
            at = CONFIGURE
            self.configure(h)
            at = START
            if move:
                with self.progress.step(h.name, "reboot"):
                    took = nodectl.reboot(h)
                self.progress.say(h.name, f"  answers over SSH from its new boot {took:.1f}s after the reboot was asked")
                with self.progress.step(h.name, "its node started by its unit at boot"):
                    nodectl.wait_started(h, self.inv.cluster.c2s_port)
            else:
                with self.progress.step(h.name, "start"):
                    nodectl.start(h, self.inv.cluster.c2s_port)
            self.stopped.remove(h.name)
            at = BACK
            with self.progress.step(h.name, "back in every peer's running_db_nodes, every table loaded"):
                health = wait_for(self.inv, self.fleet, _serving, BACK_BOUND, f"{h.node.name} back", interval=0.5)
            if move:
                nodectl.remove(h, OS_MOVE_MARKER, what="removing the move's marker")
            return health
        except Exception:
            self._bring_back(h, at)
            raise

    def _bring_back(self, h: Host, failed: str) -> None:
        """After step `failed` of `h`'s rolling upgrade failed: the steps of way_back, each shown,
        then what came of it. Raises nothing: the failure that led here is what the run reports."""
        if h.name in self.plan.moves and failed != STOP:
            self.progress.say(h.name, f"the move of {h.node.name} failed at its {failed}: a host is not moved back "
                                      "to its old release by itself (see the way back below)")
            return
        before = self.facts[h.name].ejabberd_version
        installed = None
        if failed in (INSTALL, CONFIGURE, START):   # did the package change? (None: cannot tell)
            try:
                installed = probe.gather_one(h, self.inv, probe_network=False, ctl="none").ejabberd_version
            except Exception:
                installed = None
        steps = way_back(failed, installed, before)
        if not steps:
            return
        name, was = h.node.name, f"ejabberd {before}" if before else "the version it ran"
        self.progress.say(h.name, f"the upgrade of {name} failed at its {failed}: bringing it back on {was} "
                                  f"({', '.join(steps)})")
        try:
            for step in steps:
                self._back_step(h, step, before)
        except Exception as exc:
            self.progress.say(h.name, f"{name} could NOT be brought back on {was}: {exc}")
            return
        for done in (self.stopped, self.upgraded):
            if h.name in done:
                done.remove(h.name)
        self.brought_back.append(h.name)
        self.progress.say(h.name, f"{name} is back on {was} and serves; the upgrade stops here")

    def _back_step(self, h: Host, step: str, version: str | None) -> None:
        c2s = self.inv.cluster.c2s_port
        if step == STOP:
            with self.progress.step(h.name, "stop"):
                nodectl.stop(h)
        elif step == INSTALL:
            with self.progress.step(h.name, f"install ejabberd {version} again"):
                nodectl.install(h, version, extra=packages(self.inv))
        elif step == CONFIGURE:   # compiled here: a shared beam of this run is built for the new version
            files = self._files_for(h, version)
            what = ", ".join([mf.path.rsplit("/", 1)[-1] for mf in files] + ["plugin (rebuilt)"])
            with self.progress.step(h.name, f"write {what} for ejabberd {version}"):
                nodectl.configure(h, files, True)
        elif step == START:
            with self.progress.step(h.name, "start"):
                nodectl.start(h, c2s)
        elif step == RESTART:
            with self.progress.step(h.name, "restart"):
                nodectl.restart(h, c2s)
        elif step == WAIT:
            with self.progress.step(h.name, "back in every peer's running_db_nodes, every table loaded"):
                wait_for(self.inv, self.fleet, _serving, BACK_BOUND, f"{h.node.name} back", interval=0.5)

    def _files_for(self, h: Host, version: str) -> list:
        """The files this upgrade rewrites on `h`, rendered for `version` instead."""
        from dataclasses import replace
        rewritten = {mf.path for mf in _changed_files(self.inv, h.node, self.facts, self.cookie, self.tls,
                                                      self.members)}
        was = replace(self.inv, cluster=replace(self.inv.cluster, ejabberd_version=version))
        return [mf for mf in managed_files(was, h.node, dist_address(h.node, self.facts) or "", self.cookie,
                                           (self.tls or {}).get(h.node.name), self.members)
                if mf.path in rewritten]

    # ---- full stop
    def full_stop(self) -> ClusterHealth:
        inv, fleet, progress, plan = self.inv, self.fleet, self.progress, self.plan
        with progress.phase("stop"):
            for host in plan.order:
                with progress.step(host, "drain (5s) and stop"):
                    nodectl.drain_and_stop(fleet[host], 5)
                with progress.step(host, f"copy the Mnesia directory of {inv.node(host).name}"):
                    r = fleet[host].script(render("upgrade_copy", stamp=self.stamp),
                                           what="copying the Mnesia directory", timeout=600)
                self.stopped.append(host)
                copy = [line[5:] for line in r.stdout.splitlines() if line.startswith("copy=")]
                progress.say(host, f"  copy: {copy[0] if copy else '?'}")
            last_stop = time.monotonic()
            order = [inv.node(h).name for h in plan.order]
            record = json.dumps({"order": order, "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
            fleet.parallel(lambda h: h.script(render("stop_order", record=record), timeout=15,
                                              what="recording the stop order"))
        first, rest = plan.order[-1], plan.order[:-1]
        if plan.sql_steps:
            self.schema_steps(first)
        with progress.phase("install"):
            fleet.each(plan.order, self.install)
        with progress.phase("configure"):
            self.plugin = PluginBuilds(first)
            self.configure(fleet[first])                         # compiles the plugin once
            fleet.each(rest, self.configure)
        with progress.phase("start"):
            seed = inv.node(first)

            def launch(h: Host) -> None:
                hold = "all" if h.name == first else seed.name
                with progress.step(h.name, f"start, held until {'every copy is loaded' if hold == 'all' else seed.name + ' runs'}"):
                    h.script(render("upgrade_launch", hold=hold), what="starting held", timeout=60)
            fleet.each(plan.order, launch)
            self.stopped.clear()
            first_back: list[float] = []

            def back(hh: ClusterHealth) -> bool:   # and when the first node served again: the outage's end
                if not first_back and any(n.running for n in hh.nodes):
                    first_back.append(time.monotonic())
                return hh.healthy and all(n.running and n.in_role for n in hh.nodes)
            h = wait_for(inv, fleet, back, BACK_BOUND, "back", interval=0.5)
            self.outage = first_back[0] - last_stop
            self.all_back = time.monotonic() - last_stop
            fleet.parallel(lambda hh: nodectl.remove(hh, STOP_ORDER, check=False, timeout=15))
        return h

    def schema_steps(self, host: str) -> None:
        """With every node stopped: a pg_dump of the database, then ejabberd's schema steps in one
        transaction, through `host`'s connection (before any node of the new version starts)."""
        d = self.inv.cluster.database
        with self.progress.phase("database"):
            self.dump = membership.database_dump(self.inv, self.fleet, self.progress.say, node_host=host)
            with self.progress.step("database", f"schema steps {', '.join(map(sql.label, self.plan.sql_steps))}"
                                    f" in {d.where}"):
                applied, skipped = database.apply_schema_steps(self.fleet[host], d, load_password(self.inv.cluster),
                                                               [sql.steps()[at] for at in self.plan.sql_steps])
            self.progress.say("database", f"  applied: {', '.join(applied) or 'none'}"
                              + (f"; already there: {', '.join(skipped)}" if skipped else ""))

    def where_it_stopped(self) -> str:
        plan = self.plan
        lines = [f"the upgrade stopped: upgraded so far: {', '.join(self.upgraded) or 'none'}; "
                 f"stopped: {', '.join(self.stopped) or 'none'}"
                 + (f"; brought back on the version they ran before: {', '.join(self.brought_back)}"
                    if self.brought_back else "")]
        if plan.strategy == OS_MOVE:
            lines.append("to go on: `fab upgrade` again: a host whose move was cut off (SSH lost, power cut, a "
                         "failed step once fixed) is taken up where it stopped, then the others. The way back for "
                         "a host whose move failed before its node rejoined: rebuild it on the old release "
                         "(`fab forget-node --host HOST`, reinstall it, `fab add-master --host HOST`); its Mnesia "
                         f"directory as it was is in {OS_MOVE_COPY_DIR}/{self.stamp}.tar, and a full backup was "
                         "taken first (docs/runbooks/os-upgrade.md)")
        elif plan.strategy == ROLLING:
            lines.append("the way back: pin the version the other nodes run (cluster.ejabberd_version) and "
                         "`fab upgrade` (nothing changed between the versions: it rolls back one node at a time); "
                         "or fix what failed and `fab upgrade` again to go on. A full Mnesia backup was taken "
                         "first (`fab restore --backup PATH`).")
        elif self.dump:
            lines.append(f"the database took the schema steps (its pg_dump before them: {self.dump}); to go on: fix "
                         "what failed and `fab upgrade` again (steps the database has are skipped). The way back: "
                         "docs/runbooks/upgrade.md, \"Back from 26.07 with cluster.database\": every node stopped, "
                         "the dump restored, then `fab upgrade --revert` with the version the cluster ran before.")
        else:
            lines.append("the way back: pin the version the cluster ran before (cluster.ejabberd_version) and "
                         f"`fab upgrade --revert`: every node gets that package again and its Mnesia directory "
                         f"as copied while stopped ({self.stamp}); or fix what failed and `fab upgrade` again.")
        lines.append("a host that went down keeps the cluster lock: `fab break-lock` once it is back "
                     "(docs/runbooks/upgrade.md)")
        return "\n".join(lines)


def _serving(h: ClusterHealth) -> bool:
    """Every node runs, sees every other and holds every table; mixed versions allowed (the
    rolling upgrade is under way)."""
    return all(p.startswith((MIXED, MIXED_RELEASES)) for p in h.problems)


# A rolling upgrade's steps on one node, and those of its way back when one fails.
STOP, INSTALL, CONFIGURE, START, BACK = "stop", "install", "configure", "start", "back"
RESTART, WAIT = "restart", "wait"


def way_back(failed: str, installed: str | None, before: str | None) -> list[str]:
    """What brings a node back on what it ran before when its rolling upgrade failed at step
    `failed` (pure). `before`: the version it ran (None: unknown); `installed`: its package's
    version now (None: unknown, or not cleanly installed). The steps: STOP (through the unit:
    a node that failed to start may be restarting in a loop), INSTALL (`before` again, if the
    package changed), CONFIGURE (the files and the plugin for `before`), START, RESTART, WAIT
    (until it is back in the cluster). None when it started (BACK: it runs, on the new
    version) or when the version it ran is unknown (nothing to go back to)."""
    if failed == BACK:
        return []
    if failed == STOP:   # the package is untouched; drained, it serves nobody until a restart
        return [RESTART, WAIT]
    if before is None:
        return []
    return (([STOP] if failed == START else []) + ([INSTALL] if installed != before else [])
            + ([CONFIGURE] if failed in (CONFIGURE, START) else []) + [START, WAIT])


# --------------------------------------------------------------------------- the way back

def revert(inv: Inventory, *, out: Out = print, dry: bool = False, lock_wait: float = 0,
           stamp: str | None = None) -> ClusterHealth:
    """After a full-stop upgrade: every node back on the pinned (old) version with its Mnesia
    directory as the upgrade copied it. Writes since the copy are lost; a backup of the present
    directory is kept beside the copy."""
    cookie = load_cookie(inv.cluster, create=False)
    tls = tls_materials(inv, create=False)
    version = inv.cluster.ejabberd_version
    with operation(inv, "upgrade --revert", out=out, lock_wait=lock_wait) as op:
        fleet, progress = op.fleet, op.progress
        with progress.phase("facts"):
            facts = op.look(network=False, via=False, phase=None)
            unreachable = [h for h, f in facts.items() if not f.reachable]
            if unreachable:
                raise EasyClusterError(f"{', '.join(unreachable)} unreachable: every node's copy is needed")
            found = fleet.parallel(lambda h: parse_upgrade_facts(
                h.name, h.script(render("upgrade_copies"), what="listing the upgrade's copies", timeout=30).stdout))
        copies = {h: uf.copies for h, uf in found.items() if isinstance(uf, UpgradeFacts)}
        stamps = set.intersection(*(set(c) for c in copies.values())) if copies else set()
        chosen = stamp or (max(stamps) if stamps else None)
        if not chosen or chosen not in stamps:
            raise EasyClusterError("no copy of a full-stop upgrade found on every node"
                                   + (f" named {stamp}" if stamp else "") +
                                   f" (found: {', '.join(f'{h}: {sorted(c) or None}' for h, c in copies.items())})")
        versions = {copies[h][chosen] for h in copies}
        if versions != {version}:
            raise EasyClusterError(f"the copies {chosen} were made with ejabberd {', '.join(sorted(versions))}; "
                                   f"the inventory pins {version}: pin that version to go back to it")
        order = [n.host for n in reversed(inv.nodes)]
        if inv.cluster.database:
            later = [step for at, step in sql.steps().items() if at > release(version)]
            present = database.schema_steps_present(fleet[order[-1]], inv.cluster.database,
                                                    load_password(inv.cluster), later) if later else []
            if present:
                raise EasyClusterError(f"the database has ejabberd's schema steps {', '.join(present)}, which "
                                       f"ejabberd {version} cannot write to: first, with every node stopped, "
                                       "restore the pg_dump the upgrade took before them (docs/runbooks/upgrade.md, "
                                       "\"Back from 26.07 with cluster.database\"), then `fab upgrade --revert`")
        if op.dry_run(dry, f"would stop every node, install ejabberd {version}, put back the Mnesia directories "
                           f"copied at {chosen} (what they hold now kept beside them) and start them: "
                           f"{', '.join(order)}"):
            return probe.observe(inv, fleet)
        with op.lock(list(fleet.hosts)):
            apply = _Upgrade(inv, fleet, facts, UpgradePlan(version, {}, FULL_STOP), progress, cookie, tls)
            with progress.phase("stop"):
                for host in order:
                    with progress.step(host, f"stop {inv.node(host).name}"):
                        nodectl.stop(fleet[host])
            with progress.phase("install"):
                fleet.each(order, apply.install)
            with progress.phase("configure"):
                apply.plugin = PluginBuilds(order[-1])
                apply.configure(fleet[order[-1]])
                fleet.each(order[:-1], apply.configure)
            with progress.phase("put the copies back"):
                def put_back(h: Host) -> None:
                    with progress.step(h.name, f"Mnesia directory as copied at {chosen}"):
                        r = h.script(render("upgrade_revert", stamp=chosen), what="putting the copy back", timeout=600)
                    kept = [line[5:] for line in r.stdout.splitlines() if line.startswith("kept=")]
                    progress.say(h.name, f"  what it held is kept in {kept[0] if kept else '?'}")
                fleet.each(order, put_back)
            with progress.phase("start"):
                fleet.each(order, lambda h: h.script(render("upgrade_launch", hold=""), what="starting", timeout=60))
                health = wait_for(inv, fleet, lambda hh: hh.healthy, BACK_BOUND, "back", interval=0.5)
        progress.say("cluster", f"reverted: {len(health.nodes)} nodes on ejabberd {version}, "
                                f"data as of the copy {chosen}")
        return health
