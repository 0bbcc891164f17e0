"""The apply engine: a plan's steps on the fleet, phase by phase, in the one phase order
(plan.KIND_ORDER); the first failure stops it, rolling back what that step changed. Deploy,
add-master, add-satellite and migrate-to-sql run their plans through it; the upgrade shares its
plugin build (PluginBuilds: compiled on one host, installed on the others with the same packages).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from . import membership, nodectl, probe
from .errors import EasyClusterError, PreflightFailed, RemoteError, StepFailed
from .health import ClusterHealth, assess
from .inventory import Inventory
from .plan import (DATABASE, DB_CONF, DB_CREATE, DB_HBA, DB_INSTALL, DB_ROLE, DB_SCHEMA, INSTALL, JOIN, KIND_ORDER,
                   PLUGIN, RELOAD, RESET, RESTART, ROLE, SATELLITE, START, WRITE, Plan, Step, packages, plan_joins)
from .progress import Progress
from .render import plugin_sha256
from .remote import Background, Fleet, Host
from .secrets import Secret
from . import database as dbmod, replicated


class Apply:
    """One run's apply: the plan's steps on the fleet, phase by phase; the first failure stops it."""

    def __init__(self, inv: Inventory, fleet: Fleet, plan: Plan, facts, progress: Progress,
                 password: Secret | None = None):
        self.inv, self.fleet, self.plan, self.facts, self.progress = inv, fleet, plan, facts, progress
        self.password = password   # the database role's (cluster.database)
        self.c2s = inv.cluster.c2s_port
        self.configure = sorted(set(plan.hosts_with(WRITE) + plan.hosts_with(PLUGIN)), key=_order(inv))
        self.replaced: dict[str, list[tuple[str, str]]] = {}   # host -> (path, backup) of files written
        builder = next((h for h in self.configure if h in plan.hosts_with(PLUGIN)), None)
        self.plugin_once = PluginBuilds(builder, _plugin_donor(fleet, plan, facts, builder))
        self.backed_up = False     # a backup taken earlier in this run covers the later membership changes
        self.db_state: list[dict] | None = None   # Patroni's list once the replicated database was ready
        self.reload_order = FirstThenRest([n.host for n in inv.nodes if n.host in plan.hosts_with(RELOAD)])

    def run(self) -> ClusterHealth:
        """Walk the one phase order (plan.KIND_ORDER): each kind of step is done by the phase
        that takes it (PHASES: some take several kinds at once, as their steps interleave per
        host); then verify."""
        done: set[str] = set()
        for kind in KIND_ORDER:
            if kind not in done:
                phase, kinds = next((p, ks) for p, ks in PHASES if kind in ks)
                done |= kinds
                getattr(self, phase)()
        return self.verify()

    def reset(self) -> None:
        resets = self.plan.hosts_with(RESET)
        if resets:
            with self.progress.phase("reset"):
                self.fleet.each(resets, self.reset_one)

    def roles(self) -> None:
        converts = self.plan.hosts_with(ROLE)
        if converts:   # membership changes: a backup first, then one at a time
            with self.progress.phase("backup"):
                membership.backup(self.inv, self.fleet, self.plan.seed.host, self.progress.say)
            self.backed_up = True
            for host in converts:
                with self.progress.phase(f"role {host}"):
                    self.convert_one(self.fleet[host])

    def install_and_database(self) -> None:
        plan, fleet, progress = self.plan, self.fleet, self.progress
        installs = plan.hosts_with(INSTALL)
        provision = [s for s in plan.by_kind(DATABASE) if s.action != DB_SCHEMA]
        if installs or provision:   # the nodes' packages and the database host at once
            with progress.phase("install"):
                worker = Background(lambda: self.provision_database(provision)) if provision else None
                try:
                    fleet.each(installs, self.install_one)
                finally:
                    if worker:
                        worker.result()
        if self.inv.cluster.database and plan.by_kind(DATABASE):
            with progress.phase("database"):
                self.database_ready([s for s in plan.by_kind(DATABASE) if s.action == DB_SCHEMA])

    def nodes(self) -> None:
        """Files, plugin, reloads, starts, restarts and joins of the masters, in one of two orders."""
        boot_joins = [s for s in self.plan.by_kind(JOIN) if s.at_boot]
        if boot_joins:
            self.configure_start_and_join_at_boot(boot_joins)
        else:
            self.configure_start_and_join()

    def satellites(self) -> None:
        """Satellites last: started, or restarted for a new configuration, once every master's
        work is done (a satellite joins through the masters at every start)."""
        plan = self.plan
        satellites = [n.host for n in self.inv.nodes if n.host in plan.hosts_with(SATELLITE) or
                      (n.satellite and n.host in plan.hosts_with(RESTART))]
        if satellites:
            self.start_satellites(satellites)

    def verify(self) -> ClusterHealth:
        inv, fleet, plan, progress = self.inv, self.fleet, self.plan, self.progress
        ask = plan.seed.host if plan.seed.host in fleet.hosts else next(iter(fleet.hosts))
        with progress.phase("verify"):
            final = probe.gather_via(fleet, ask)
        statuses = {host: f.cluster_status for host, f in final.items()}
        for step in plan.by_kind(JOIN):
            if step.at_boot:
                membership.check_joined(inv, fleet, inv.node(step.host), step.seed, statuses)
                progress.say(step.host, "verified: in every member's running_db_nodes, a local copy of every table")
        health = assess(inv, final)
        if not health.healthy:
            raise EasyClusterError("deploy finished but the cluster is not healthy:\n  " + "\n  ".join(health.problems))
        return health

    # ----------------------------------------------------------------- the database

    def provision_database(self, steps: list[Step]) -> None:
        """The database host's steps, in one script (database.provision), with the files the plan rendered."""
        if self.inv.cluster.database.replicated:
            d = self.inv.cluster.database
            with self.progress.step("database", f"replicated PostgreSQL on {', '.join(d.replicas)} (Patroni, etcd): "
                                    + ", ".join(sorted({s.action for s in steps}))):
                self.db_state = replicated.provision(self.fleet, self.inv, steps, self.password, self.progress.say)
            return
        actions = {s.action for s in steps}
        content = {s.action: s.file.content for s in steps if s.file is not None}
        h = self.fleet.database_host()
        with self.progress.step(h.name, "PostgreSQL: " + ", ".join(a for a in (DB_INSTALL, DB_CONF, DB_HBA, DB_ROLE,
                                                                                DB_CREATE) if a in actions)):
            dbmod.provision(h, self.inv, actions, self.password, content.get(DB_CONF), content.get(DB_HBA))

    def database_ready(self, schema: list[Step]) -> None:
        """ejabberd's schema loaded (from the first node's package), then every node logs in
        and sees this cluster's mark: before any node is configured to use the database."""
        d, name = self.inv.cluster.database, self.inv.cluster.name
        if d.replicated:   # the nodes' HAProxy is configured with their files, later: to the primary directly
            state = self.db_state or replicated.wait_ready(self.fleet, list(d.replicas))
            d = replace(d, server=replicated.leader(state)["Host"], port=5432)
        for step in schema:
            h = self.fleet[step.host]
            with self.progress.step(h.name, f"load ejabberd's schema into {d.where}"):
                text = h.run(f"cat {dbmod.SCHEMA_FILE}", what=f"reading {dbmod.SCHEMA_FILE}").stdout
                dbmod.load_schema(h, d, self.password, name, text)
        # a replicated database's members apply a new pg_hba in Patroni's next loop (loop_wait, 5 s)
        deadline = time.monotonic() + (3 * replicated.LOOP_WAIT if self.inv.cluster.database.replicated else 0)
        with self.progress.step("*", f"every node logs in to {d.where}"):
            while True:
                seen = dbmod.sql_everywhere(self.fleet, self.password, d)
                wrong = [f"{h}: {s.error or f'the database is marked for cluster {s.marker!r}'}"
                         for h, s in seen.items() if not s.ok or s.marker != name]
                if not wrong or time.monotonic() > deadline:
                    break
                time.sleep(1)
            if wrong:
                raise EasyClusterError("the database is not usable from every node:\n  " + "\n  ".join(wrong))

    # ----------------------------------------------------------------- one host's steps

    def reset_one(self, h: Host) -> None:
        membership.wipe(self.fleet, self.inv.node(h.name), self.progress,
                        "stop the package's node and move its Mnesia directory away")

    def convert_one(self, h: Host) -> None:
        """Out of the cluster, to come back in the inventory's role later in the run: drained and
        stopped, out of the schema (from the seed), its Mnesia directory emptied (kept in a
        tarball). A master's data stays on the other masters; a satellite holds none."""
        node, seed = self.inv.node(h.name), self.plan.seed
        if self.facts[h.name].beam_running:
            with self.progress.step(h.name, "drain (5s) and stop"):
                nodectl.drain_and_stop(h, 5)
        with self.progress.step(seed.host, f"remove {node.name} from the schema"):
            nodectl.forget(self.fleet[seed.host], node.name)
        membership.wipe(self.fleet, node, self.progress, f"empty its Mnesia directory (it becomes a {node.role})")

    def start_satellites(self, hosts: list[str]) -> None:
        """Each satellite started in turn (it joins through its masters as it starts: no copy of
        any table is made), then seen running by the seed, holding no disc copy. A backup first
        when the cluster ran before this run."""
        inv, fleet, progress, seed = self.inv, self.fleet, self.progress, self.plan.seed
        joining = [h for h in hosts if h in self.plan.hosts_with(SATELLITE)]
        if joining and self.facts[seed.host].running and seed.host in fleet.hosts and not self.backed_up:
            with progress.phase("backup"):
                membership.backup(inv, fleet, seed.host, progress.say)
        for host in hosts:
            node = inv.node(host)
            with progress.phase(f"satellite {host}"):
                if host not in joining:
                    self.restart_and_rejoin(fleet[host])
                    continue
                with progress.step(host, "start as a satellite"):
                    nodectl.start(fleet[host], self.c2s)
                with progress.step(host, f"in {seed.name}'s running_db_nodes, no disc copy here"):
                    nodectl.wait_status(fleet[seed.host], lambda st: node.name in st.get("running_db_nodes", []))
                    membership.check_satellite(fleet[host], node)

    def install_one(self, h: Host) -> None:
        version = self.inv.cluster.ejabberd_version
        step = next(s for s in self.plan.by_kind(INSTALL) if s.host == h.name)
        with self.progress.step(h.name, step.summary):
            nodectl.install(h, version, extra=packages(self.inv))
        if self.facts[h.name].running:   # a driver installed under a running node: on its code path now
            with self.progress.step(h.name, "the new libraries on the running node's code path"):
                nodectl.ctl_json(h, "easy_cluster_code_path", what="adding the new libraries to the code path")

    def configure_one(self, h: Host) -> None:
        plan = self.plan
        files = [s.file for s in plan.steps if s.kind == WRITE and s.host == h.name]
        plugin = h.name in plan.hosts_with(PLUGIN)
        what = ", ".join([f.path.rsplit("/", 1)[-1] for f in files] + (["plugin"] if plugin else []))
        self.replaced[h.name] = self.plugin_once.configure(h, files, plugin, self.progress, f"write {what}")
        for _path, backup in self.replaced[h.name]:
            self.progress.say(h.name, f"  previous version kept in {backup}")

    def reload_one(self, h: Host) -> None:
        """In the order of FirstThenRest: a module the new ejabberd.yml starts (mod_mam) creates
        its Mnesia tables on the first node alone, and the others add their copies. Created by
        several nodes at once, a table can end with no copy on one of them (seen: "not a master
        (no local copy of archive_prefs)" after cluster.mam was turned on)."""
        def reload() -> None:
            with self.progress.step(h.name, "reload ejabberd.yml"):
                nodectl.reload_config(h)
        self.reload_order.run(h.name, reload)

    def start_one(self, h: Host) -> None:
        with self.progress.step(h.name, "start"):
            nodectl.start(h, self.c2s)

    def restart_and_rejoin(self, h: Host) -> None:
        """The node must come back seeing the same peers as in the facts."""
        progress, replaced = self.progress, self.replaced.get(h.name, [])
        before = self.facts[h.name].cluster_status
        peers = set(before.get("running_db_nodes", [])) if before else set()
        peers -= {self.inv.node(c).name for c in self.plan.hosts_with(ROLE)}   # out until later in this run
        try:
            with progress.step(h.name, "restart"):
                nodectl.restart(h, self.c2s)
        except StepFailed as failed:
            if not replaced:
                raise
            # The new configuration does not start: put the old one back so the node serves again.
            with progress.step(h.name, "restore the previous configuration and start"):
                nodectl.restore_and_start(h, replaced, self.c2s)
            raise StepFailed(h.name, "restart with the new configuration",
                             f"{failed.cause}\n(the previous configuration was restored and the node runs it; "
                             "fix the inventory or template and deploy again)") from None
        satellite = self.inv.node(h.name).satellite    # holds no table: none is missing
        with progress.step(h.name, "back in the cluster" + ("" if satellite else " with all tables")):
            nodectl.wait_status(h, lambda st: peers <= set(st.get("running_db_nodes", []))
                                and (satellite or not st.get("missing_tables")))

    def started_or_rolled_back(self, h: Host, seed: str) -> None:
        with self.progress.step(h.name, "ejabberd started"):
            try:
                nodectl.wait_started(h, self.c2s)
            except RemoteError as exc:
                note = membership.roll_back_join(self.inv, self.fleet, self.inv.node(h.name), seed, reachable=True)
                raise RemoteError(h.name, "ejabberd did not start after its join",
                                  f"{exc.detail}\n  rolled back: {note}")

    # ----------------------------------------------------------------- the two orders

    def configure_start_and_join(self) -> None:
        """Phase by phase: configure, reload, start, restarts one at a time, then (after a backup)
        joins of running nodes one at a time."""
        inv, fleet, plan, facts, progress = self.inv, self.fleet, self.plan, self.facts, self.progress
        if self.configure:
            with progress.phase("configure"):
                fleet.each(self.configure, self.configure_one)
        if plan.hosts_with(RELOAD):
            with progress.phase("reload"):
                fleet.each(plan.hosts_with(RELOAD), self.reload_one)
        starts = plan.hosts_with(START)
        if starts:
            with progress.phase("start"):
                fleet.each(starts, self.start_one)

        for host in plan.hosts_with(RESTART):   # one at a time: the cluster stays up
            if inv.node(host).satellite:
                continue                        # with the satellites, after the joins
            with progress.phase(f"restart {host}"):
                self.restart_and_rejoin(fleet[host])

        joins = plan.by_kind(JOIN)
        if plan.hosts_with(RESTART) or any(facts[h].mnesia_schema for h in starts):
            # membership of nodes that were down is known only now that they run (a node that
            # started with no Mnesia data of its own is standalone: the plan's joins stand)
            fresh = probe.gather(fleet, probe_network=False)
            joins, problems = plan_joins(inv, fresh)
            if problems:
                raise PreflightFailed(problems)
        if joins:   # a backup of the cluster the nodes join, before its membership changes
            with progress.phase("backup"):
                membership.backup(inv, fleet, inv.node(joins[0].seed).host, progress.say)
        for step in joins:                      # strictly one at a time, in inventory order
            with progress.phase(f"join {step.host}"), progress.step(
                    step.host, f"join {step.seed} as master (stopped, then joined as it starts)"):
                membership.join(inv, fleet, inv.node(step.host), step.seed, progress.say)
            progress.say(step.host, "verified: in every member's running_db_nodes, a local copy of every table")

    def configure_start_and_join_at_boot(self, joins: list[Step]) -> None:
        """New nodes join during their first start (plan.mark_boot_joins). Every host at once:
        its files, then the seed's start (a new cluster) or its backup (a running one: before its
        membership changes), and each joining node's VM boots and waits. Then each joins in turn,
        strictly one at a time in inventory order; its ejabberd starts on the copied tables while
        the next one joins."""
        inv, fleet, plan, facts, progress = self.inv, self.fleet, self.plan, self.facts, self.progress
        seed = inv.node(joins[0].seed)
        joining = [s.host for s in joins]
        backup_on = seed.host if facts[seed.host].running else None
        backups: list[membership.BackupUnderWay] = []

        def prepare(h: Host) -> None:
            try:
                if h.name in plan.hosts_with(WRITE) or h.name in plan.hosts_with(PLUGIN):
                    self.configure_one(h)
            except BaseException:   # failed before its reload: the first must not hold the others' back
                self.reload_order.release(h.name)
                raise
            if h.name in plan.hosts_with(RELOAD):
                self.reload_one(h)
            if h.name == backup_on:   # the joins may begin once it holds the cluster as it is now
                backups.append(membership.backup_begun(inv, fleet, h.name, progress.say))
            elif h.name in joining:
                with progress.step(h.name, f"start, to join {seed.name} at boot"):
                    nodectl.launch_joining(h, seed.name)
            elif h.name in plan.hosts_with(START):
                self.start_one(h)

        hosts = sorted({s.host for s in plan.steps if s.kind not in (JOIN, DATABASE)} |
                       ({backup_on} if backup_on else set()), key=_order(inv))
        waiting_from = 0    # joining[waiting_from:] wait for their turn
        try:
            with progress.phase("configure and start"):
                fleet.each(hosts, prepare)
            if not backup_on:
                progress.say(seed.host, "no Mnesia backup: the cluster is new (made by this run), nothing to lose")
            for step in joins:
                waiting_from += 1
                with progress.phase(f"join {step.host}"), progress.step(
                        step.host, f"join {seed.name} as master, at boot"):
                    membership.join_at_boot(inv, fleet, inv.node(step.host), seed.name, progress.say)
            if backups:
                with progress.phase("backup"):
                    self.backup_written(backups.pop(), joining, seed.name)
        except Exception:
            for underway in backups:   # a join failed beside it: the backup is still worth having
                try:
                    underway.finish()
                except RemoteError as exc:
                    progress.say(underway.host, f"the Mnesia backup failed too: {exc.detail}")
            # nodes still waiting for their turn hold nothing yet: stop them, leave no marker
            for host in joining[waiting_from:]:
                try:
                    nodectl.abort_boot_join(fleet[host])
                    progress.say(host, "stopped: it was waiting for its turn to join (nothing had changed)")
                except RemoteError as exc:   # the original failure is what the operator needs first
                    progress.say(host, f"could not stop it ({exc.detail}); the next deploy rolls it back")
            raise
        with progress.phase("started"):
            fleet.each(joining, lambda h: self.started_or_rolled_back(h, seed.name))

    def backup_written(self, underway: "membership.BackupUnderWay", joined: list[str], seed: str) -> None:
        """The backup taken beside the joins, finished: had it failed, the cluster would have
        changed with no restore point, so the joins are rolled back (and the run fails)."""
        try:
            underway.finish()
        except RemoteError as exc:
            notes = [membership.roll_back_join(self.inv, self.fleet, self.inv.node(h), seed, reachable=True)
                     for h in joined]
            raise RemoteError(underway.host, "the Mnesia backup taken before the joins failed",
                              f"{exc.detail}\n  rolled back: " + "; ".join(notes)) from None


# The phases of Apply.run, each with the kinds of step it does. Their order is KIND_ORDER's:
# a phase runs when the walk reaches the first of its kinds (tests/test_apply.py holds this).
PHASES: tuple[tuple[str, frozenset[str]], ...] = (
    ("reset", frozenset({RESET})),
    ("roles", frozenset({ROLE})),
    ("install_and_database", frozenset({DATABASE, INSTALL})),
    ("nodes", frozenset({WRITE, PLUGIN, RELOAD, START, RESTART, JOIN})),
    ("satellites", frozenset({SATELLITE})),
)


class FirstThenRest:
    """The first of `hosts` does its part alone; the others wait until it is done (or failed),
    then go at once."""

    def __init__(self, hosts: list[str]):
        self.first = hosts[0] if hosts else None
        self._done = threading.Event()

    def run(self, host: str, func) -> None:
        if host != self.first:
            self._done.wait(timeout=600)
        try:
            func()
        finally:
            self.release(host)

    def release(self, host: str) -> None:
        """The first is done with its part, or will never do it (it failed before): the others go."""
        if host == self.first:
            self._done.set()


class PluginBuilds:
    """The plugin is compiled on the first host that needs it (`builder`); the others wait for
    that beam and install it where their ejabberd and Erlang packages are the same (erlc costs
    ~1 s a host). With a `donor` (a member whose installed plugin is the current one), the
    builder takes the donor's beams instead, where its packages are the same (add-master). If
    the builder fails, each compiles its own."""

    def __init__(self, builder: str | None, donor: Host | None = None):
        self.builder, self.donor = builder, donor
        self._done = threading.Event()
        self._build: nodectl.PluginBuild | None = None

    def publish(self, build: nodectl.PluginBuild | None) -> None:
        self._build = build
        self._done.set()

    def wait(self) -> nodectl.PluginBuild | None:
        self._done.wait(timeout=600)
        return self._build

    def configure(self, h: Host, files: list, plugin: bool, progress: Progress, what: str) -> list[tuple[str, str]]:
        """nodectl.configure on `h` as the progress step `what`: with the builder's beam when
        `h` is not the builder (waiting for it), publishing this host's build when it is.
        Returns (path, backup) of every file replaced."""
        shared, source = None, None
        if plugin and self.builder is not None and h.name != self.builder:
            shared, source = self.wait(), f"the beam compiled on {self.builder}"
        elif plugin and h.name == self.builder and self.donor is not None:
            try:
                shared, source = nodectl.plugin_export(self.donor), f"the beams installed on {self.donor.name}"
            except RemoteError:
                shared = None   # compiled here, as without a donor
        build = None
        try:
            with progress.step(h.name, what):
                replaced, build = nodectl.configure(h, files, plugin, shared)
        finally:
            if h.name == self.builder:
                self.publish(build or shared)
        if shared and not build:
            progress.say(h.name, f"  plugin: {source} (same packages)")
        return replaced


def _plugin_donor(fleet: Fleet, plan: Plan, facts, builder: str | None) -> Host | None:
    """A host of the fleet the plan leaves the plugin alone on, whose installed plugin is the
    current one and whose packages are the builder's (as far as the facts know them: configure.sh
    compares what the beams were built with), to give the builder its beams."""
    if builder is None:
        return None
    want, mine = plugin_sha256(), facts.get(builder)
    for name in fleet.hosts:
        f = facts.get(name)
        if name == builder or name in plan.hosts_with(PLUGIN) or f is None or f.error or f.plugin_sha256 != want:
            continue
        if mine is not None and mine.ejabberd_version and (mine.ejabberd_version, mine.erlang_version) != (
                f.ejabberd_version, f.erlang_version):
            continue
        return fleet[name]
    return None


def _order(inv: Inventory):
    index = {n.host: i for i, n in enumerate(inv.nodes)}
    return lambda host: index[host]
