"""`fab migrate-to-sql`: a running Mnesia cluster's data moved into cluster.database, then the
nodes switched to it one at a time (docs/runbooks/migrate-to-sql.md).

1. The database made ready as `fab deploy` makes it (PostgreSQL, role, schema), and every node
   configured to reach it while its data stays in Mnesia (a reload: nobody is disconnected).
2. A Mnesia backup.
3. ejabberd's export (ejd2sql), each domain in turn, from one node, into an emptied database;
   then the rows counted per table against Mnesia's records: a difference stops the run
   before any node is switched.
4. Each node switched in turn (default_db: sql, a reload: ejabberd changes every store live).
5. What Mnesia still received while nodes were being switched, copied over (accounts and
   roster items the database lacks, offline messages stored since the export began).

Progress is kept in the database (easycluster's mark), so an interrupted run finishes on the
next: before any node is switched the export starts again from an emptied database; after,
the remaining nodes are switched and the copy-over runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

from .. import database as dbmod
from .. import membership, nodectl, probe
from ..apply import Apply
from ..operation import operation
from ..errors import EasyClusterError, PreflightFailed
from ..health import ClusterHealth, assess
from ..inventory import Inventory
from ..plan import choose_seed, dist_address, file_change, format_plan, make_plan, members_of, sql_in_use
from ..progress import Out, Progress
from ..remote import Fleet
from ..render import managed_files
from ..secrets import load_cookie, load_password, load_replication_password
from ..tls import materials as tls_materials

EXPORTING, EXPORTED, SWITCHED, DONE = "exporting", "exported", "switched", "done"
# Fault injection (the tests'): a local file; while it exists the migration waits between its
# export and the first switch, saying so, as a slow operator's run would.
PAUSE_ENV = "EASYCLUSTER_MIGRATE_PAUSE"


@dataclass
class MigrateResult:
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)   # sql table -> (mnesia, sql)
    delta: dict[str, int] = field(default_factory=dict)                # what the copy-over added
    health: ClusterHealth | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)


def migrate_to_sql(inv: Inventory, *, out: Out = print, dry: bool = False, lock_wait: float = 0) -> MigrateResult:
    d = inv.cluster.database
    if d is None:
        raise EasyClusterError(f"{inv.path}: cluster.database is not set: add the database the data moves to "
                               "(README: the database section); nothing was changed")
    cookie = load_cookie(inv.cluster, create=False)
    tls = tls_materials(inv, create=False)
    password = load_password(inv.cluster, create=True, dry=dry)
    load_replication_password(inv.cluster, create=True, dry=dry)   # made before looking: the facts compare with it
    result = MigrateResult()
    with operation(inv, "migrate-to-sql", out=out, lock_wait=lock_wait) as op:
        fleet, progress = op.fleet, op.progress
        facts = op.look(password)
        db = op.db
        down = [n.host for n in inv.nodes if not facts[n.host].running]
        if down:
            raise EasyClusterError(f"not running: {', '.join(down)}; a migration needs every node of the cluster "
                                   "up (`fab status`, `fab deploy`); nothing was changed")
        on_mnesia = [n.host for n in inv.nodes if not sql_in_use(facts[n.host])]
        state = _state(db)
        if not on_mnesia and (state or DONE).split()[0] == DONE:
            out("every node keeps its data in the database already: nothing to migrate")
            return result
        plan = make_plan(inv, facts, cookie, tls, db=replace(db, migrating=frozenset(on_mnesia)))
        if plan.problems:
            raise PreflightFailed(plan.problems)
        seed, _ = choose_seed(inv, facts)
        fresh = len(on_mnesia) == len(inv.nodes)   # no node switched yet: the export (again)
        steps = ([f"back up Mnesia on {seed.host}",
                  f"empty {d.where} and export every store of {', '.join(inv.cluster.domains)} into it "
                  f"(from {seed.name}), then compare the rows per table with Mnesia's records"] if fresh else
                 [f"the export was done ({state or '?'}): finish the switch"])
        steps += [f"switch {inv.node(h).name} to the database (ejabberd.yml, a reload)" for h in on_mnesia]
        steps += ["copy over what Mnesia received during the switch (accounts, roster items, offline messages)"]
        if plan.changes:
            out(format_plan(plan, inv))
        out("migration, in this order:\n" + "\n".join(f"  {i}. {s}" for i, s in enumerate(steps, 1)))
        if op.dry_run(dry):
            return result
        with op.lock(list(fleet.hosts)):
            if plan.changes:   # the database ready and every node connected to it, data still in Mnesia
                with progress.phase("connect"):
                    Apply(inv, fleet, plan, facts, progress, password).run()
            work = _Migration(inv, fleet, progress, password, seed.host)
            if fresh:
                with progress.phase("backup"):
                    membership.backup(inv, fleet, seed.host, progress.say)
                with progress.phase("export"):
                    since, result.counts = work.export()
            else:
                since = _since(state)
            pause = os.environ.get(PAUSE_ENV)
            if pause and os.path.exists(pause):
                progress.say(seed.host, f"paused after the export while {pause} exists")
                while os.path.exists(pause):
                    time.sleep(0.2)
            for host in on_mnesia:
                with progress.phase(f"switch {host}"):
                    work.switch(host, facts, cookie, tls)
            work.mark(f"{SWITCHED} {since}")
            with progress.phase("copy-over"):
                result.delta = work.copy_over(since)
                result.counts = work.counts()
                work.mark(f"{DONE} {since}")
            with progress.phase("verify"):
                facts, db = probe.gather_all(fleet, password, probe_network=False)
                result.health = assess(inv, facts, db.sql if db else None)
        out("rows per table (Mnesia records -> database rows):")
        out("\n".join(f"  {sql:16} {m:>9} -> {s}" for sql, (m, s) in result.counts.items()))
        if any(result.delta.values()):
            out("copied over after the switch: " + ", ".join(f"{k} {v}" for k, v in result.delta.items()))
        op.summary(result.health)
        if not result.health.healthy:
            raise EasyClusterError("migrated, but the cluster is not healthy:\n  " + "\n  ".join(result.health.problems))
        result.phases = progress.phases
        return result


def _state(db) -> str | None:
    seen = [s for s in (db.sql.values() if db else []) if s.ok]
    return seen[0].migration if seen else None


def _since(state: str | None) -> int:
    try:
        return int((state or "").split()[1])
    except (IndexError, ValueError):
        raise EasyClusterError(f"the database's migration mark is {state!r}, with no export time: a node was "
                               "switched by hand? Restore from the Mnesia backup (docs/runbooks/migrate-to-sql.md)"
                               ) from None


class _Migration:
    def __init__(self, inv: Inventory, fleet: Fleet, progress: Progress, password, seed: str):
        self.inv, self.fleet, self.progress, self.password, self.seed = inv, fleet, progress, password, seed
        self.db = inv.cluster.database

    def _conn(self):
        return dbmod.connect(self.fleet[self.seed], self.db, self.password, timeout=30)

    def mark(self, state: str) -> None:
        conn = self._conn()
        try:
            dbmod.set_migration(conn, state)
        finally:
            conn.close()

    def export(self) -> tuple[int, dict[str, tuple[int, int]]]:
        """From an emptied database: each domain exported, ejabberd's leftovers fixed, rows
        counted against Mnesia's. Returns when the export began (the node's clock) and the counts."""
        h, say = self.fleet[self.seed], self.progress.say
        conn = self._conn()
        try:
            dbmod.set_migration(conn, EXPORTING)
            tables = dbmod.clear_data(conn)
            say(self.seed, f"emptied {len(tables)} tables of {self.db.where}")
        finally:
            conn.close()
        since = None
        for domain in self.inv.cluster.domains:
            with self.progress.step(self.seed, f"export {domain} (ejd2sql)"):
                answer = nodectl.ctl_json(h, "easy_cluster_sql_export", domain, what=f"exporting {domain}",
                                          timeout=3600)
            since = answer["started"] if since is None else since
        conn = self._conn()
        try:
            dbmod.after_export(conn, self.inv.cluster.domains)
        finally:
            conn.close()
        counts = self.counts()
        wrong = {t: c for t, c in counts.items() if c[0] != c[1]}
        if wrong:
            raise EasyClusterError("the database's rows differ from Mnesia's records after the export (no node "
                                   "was switched; rerun `fab migrate-to-sql` to export again):\n  " + "\n  ".join(
                                       f"{t}: {m} in Mnesia, {s} in the database" for t, (m, s) in wrong.items()))
        self.mark(f"{EXPORTED} {since}")
        say(self.seed, "rows per table equal: " + ", ".join(f"{t} {m}" for t, (m, _s) in counts.items() if m))
        return since, counts

    def counts(self) -> dict[str, tuple[int, int]]:
        tables = nodectl.ctl_json(self.fleet[self.seed], "easy_cluster_tables", what="counting Mnesia's records",
                                  or_none=True) or {}
        sizes = {t: (info.get("size") or 0) for t, info in tables.get("tables", {}).items()}
        conn = self._conn()
        try:
            rows = dbmod.sql_counts(conn)
        finally:
            conn.close()
        return {sql: (sizes.get(mnesia, 0), rows[sql]) for mnesia, sql in dbmod.COUNTED}

    def switch(self, host: str, facts, cookie, tls) -> None:
        """The node's ejabberd.yml with default_db: sql, and a reload: ejabberd moves every store
        to the database live; then it counts its accounts there."""
        inv, h, node = self.inv, self.fleet[host], self.inv.node(host)
        now = probe.gather_one(h, inv, probe_network=False)   # as the connect phase left it
        files = [mf for mf in managed_files(inv, node, dist_address(node, facts) or "", cookie,
                                            (tls or {}).get(node.name), members_of(inv, facts), self.password)
                 if file_change(mf, now) is not None]
        with self.progress.step(host, "default_db: sql, reload"):
            nodectl.configure(h, files, False)
            nodectl.reload_config(h)
            conn = self._conn()
            try:
                users = conn.run("SELECT count(*) FROM users")[0][0]
            finally:
                conn.close()
            deadline = time.monotonic() + 30
            while (st := nodectl.status(h) or {}).get("registered_users") != users:
                if time.monotonic() > deadline:
                    raise EasyClusterError(f"{host}: after the reload the node counts {st.get('registered_users')} "
                                           f"accounts, the database {users}")
                time.sleep(0.5)

    def copy_over(self, since: int) -> dict[str, int]:
        total = {"users": 0, "roster": 0, "offline": 0}
        for domain in self.inv.cluster.domains:
            with self.progress.step(self.seed, f"copy over {domain}'s writes to Mnesia since the export"):
                answer = nodectl.ctl_json(self.fleet[self.seed], "easy_cluster_sql_delta", domain, str(since),
                                          what=f"copying over {domain}", timeout=3600)
            for k in total:
                total[k] += answer.get(k, 0)
        return total
