"""`fab deploy`: inventory -> facts -> plan -> apply -> verify.

Independent per-host work runs on all hosts at once; restarts and mnesia joins
run strictly one node at a time. The first failure stops the run, naming host,
step and cause.
"""

from __future__ import annotations

import secrets as _random
from dataclasses import dataclass, field, replace

from .. import membership, nodectl, probe
from ..apply import Apply
from ..operation import operation
from ..errors import EasyClusterError, PreflightFailed
from ..health import ClusterHealth, assess, departed
from ..inventory import Inventory
from ..plan import DATABASE, JOIN, RESET, WRITE, Plan, Step, as_reset, choose_seed, format_plan, make_plan, \
    mark_boot_joins, package_nodes
from ..progress import Out, Progress
from ..remote import Fleet
from ..secrets import COOKIE_ALPHABET, Secret, load_cookie, load_password, load_replication_password
from ..tls import materials as tls_materials


@dataclass
class DeployResult:
    plan: Plan
    health: ClusterHealth | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=dict)


def deploy(inv: Inventory, *, out: Out = print, dry: bool = False, lock_wait: float = 0) -> DeployResult:
    cookie = _cookie_for(inv, dry)
    tls = tls_materials(inv, create=not dry)
    password = load_password(inv.cluster, create=True, dry=dry)
    load_replication_password(inv.cluster, create=True, dry=dry)   # made before looking: the facts compare with it
    with operation(inv, "deploy", out=out, lock_wait=lock_wait) as op:
        facts = op.look(password, report_departed=True)
        effective, db, progress = op.inv, op.db, op.progress
        fleet = op.fleet.subset(effective)
        plan = make_plan(effective, facts, cookie, tls, db=db)
        if plan.problems:
            raise PreflightFailed(plan.problems)
        watch = op.monitoring_plan()
        if dry:
            out(format_plan(plan, effective))
            op.show_monitoring(watch)
            op.dry_run(True)
            return DeployResult(plan, phases=progress.phases, connections=fleet.connections_opened())
        if not plan.changes and not any(f.joining for f in facts.values()):
            health = assess(effective, facts)
            out(format_plan(plan, effective) if not watch else "no changes to the cluster's nodes")
            op.show_monitoring(watch)
            op.update_monitoring(steps=watch)
            op.summary(health)
            if not health.healthy:
                raise EasyClusterError("the cluster is not healthy:\n  " + "\n  ".join(health.problems))
            return DeployResult(plan, health, progress.phases, fleet.connections_opened())
        with op.lock(list(fleet.hosts)):
            if _recover_joins(effective, fleet, facts, progress):
                facts = probe.gather(fleet)
                plan = make_plan(effective, facts, cookie, tls, db=db)
                if plan.problems:
                    raise PreflightFailed(plan.problems)
            out(format_plan(plan, effective))
            facts = as_reset(facts, plan.hosts_with(RESET))
            with progress.phase("apply"):
                health = Apply(effective, fleet, plan, facts, progress, password).run()
            op.show_monitoring(watch)
            op.update_monitoring(steps=watch)
        op.summary(health)
        return DeployResult(plan, health, progress.phases, fleet.connections_opened())


def add_master(inv: Inventory, host: str, *, out: Out = print, dry: bool = False,
               lock_wait: float = 0) -> DeployResult:
    """`fab add-master --host H`: bring one inventory host into the running cluster as a master;
    no other node restarts."""
    return _add(inv, host, "master", out, dry, lock_wait)


def add_satellite(inv: Inventory, host: str, *, out: Out = print, dry: bool = False,
                  lock_wait: float = 0) -> DeployResult:
    """`fab add-satellite --host H`: as add-master, for a host the inventory gives the satellite role."""
    return _add(inv, host, "satellite", out, dry, lock_wait)


def _add(inv: Inventory, host: str, role: str, out: Out, dry: bool, lock_wait: float) -> DeployResult:
    """Bring one inventory host into the running cluster in its role (`role`: the one the
    command asks for, which the inventory must give the host); no other node restarts."""
    node = inv.node(host)
    if node.role != role:
        raise EasyClusterError(f"{node.host} is a {node.role} in {inv.path}: `fab add-{node.role} --host "
                               f"{node.host}` (or change nodes[].role); nothing was changed")
    cookie = load_cookie(inv.cluster, create=False)
    tls = tls_materials(inv, create=not dry)
    password = load_password(inv.cluster, create=True, dry=dry)
    load_replication_password(inv.cluster, create=True, dry=dry)   # made before looking: the facts compare with it
    with operation(inv, f"add-{role} --host {node.host}", out=out, lock_wait=lock_wait) as op:
        progress = op.progress
        facts = op.look(password)
        f = facts[node.host]
        if f.error:
            raise EasyClusterError(f"{node.host}: {f.error}; nothing was changed")
        seed, db_nodes = choose_seed(replace(inv, nodes=tuple(n for n in inv.nodes if n is not node)), facts)
        if not facts[seed.host].running:
            raise EasyClusterError("no running cluster to join (start it with `fab deploy`); nothing was changed")
        gone = departed(facts).get(node.name)
        if node.name in db_nodes and not gone and not f.joining:
            raise EasyClusterError(f"{node.name} is already a member of the cluster; nothing was changed")
        sub = replace(inv, nodes=tuple(n for n in inv.nodes if n is node or (
            n.name in db_nodes and facts[n.host].running)))
        fleet = op.fleet.subset(sub)
        package_node = node.host in package_nodes(inv, facts)   # reset by the plan

        def wiped() -> bool:   # a removed/forgotten node's old files would rejoin it with stale tables
            return bool(gone) and not package_node and (node.name in db_nodes or f.mnesia_schema or f.beam_running)

        def plan_with(facts, db) -> tuple[Plan, dict]:
            """The plan for the node (and the firewall of every member), and the facts as they will
            be once its resets are done."""
            # the firewall of every member lets in every node of the inventory, the new one too;
            # so does the database's pg_hba.conf
            away = departed(facts)
            db = replace(db, let_in=tuple(n for n in inv.nodes if n is node or n.name not in away)) if db else None
            plan = make_plan(sub, facts, cookie, tls, membership.firewall_members(inv, facts, joining=node), db)
            if plan.problems:
                raise PreflightFailed(plan.problems)

            def firewall(s: Step) -> bool:
                return s.kind == WRITE and s.file is not None and s.file.live
            drift = sorted({s.host for s in plan.steps if s.host != node.host and s.kind not in (JOIN, DATABASE)
                            and not firewall(s)})
            if drift:
                out(f"note: {', '.join(drift)} differ from the inventory; add-{role} leaves them as they "
                    "are (`fab deploy --dry` shows how)")
            facts = as_reset(facts, plan.hosts_with(RESET))
            return Plan(mark_boot_joins(sub, [s for s in plan.steps if s.host == node.host or firewall(s)
                                              or s.kind == DATABASE], facts), plan.seed), facts

        if dry:
            if f.joining or wiped():
                op.dry_run(True, (f"would first finish or roll back the earlier join of {node.name} (its marker is "
                                  "on the node), then plan again" if f.joining else
                                  f"would first reset {node.name} ({gone[0]} on {gone[1]}): its old Mnesia files "
                                  "would rejoin it with stale tables; then plan again"))
                return DeployResult(Plan([], seed), phases=progress.phases, connections=fleet.connections_opened())
            plan, _ = plan_with(facts, op.db)
            out(format_plan(plan, sub))
            op.dry_run(True)
            return DeployResult(plan, phases=progress.phases, connections=fleet.connections_opened())
        db = op.db
        with op.lock(list(fleet.hosts)):
            if f.joining and membership.recover_interrupted_join(sub, fleet, node, f,
                                                                 f.joining.get("seed") or seed.name, progress.say):
                # that join completed (systemd started the killed node again, which finished it at
                # boot): a master now, not the node removed before it, whose old files are wiped
                gone = None
            reset = wiped()
            if reset:
                membership.wipe(fleet, node, progress, f"reset {node.name} ({gone[0]} on {gone[1]})")
                if node.name in db_nodes:
                    nodectl.forget(fleet[seed.host], node.name)
            if f.joining or reset:   # the node changed under us: look again
                with progress.phase("facts"):
                    facts, db = probe.gather_all(fleet, password)
            plan, facts = plan_with(facts, db)
            if plan.steps:
                out(format_plan(plan, sub))
                with progress.phase("apply"):
                    health = Apply(sub, fleet, plan, facts, progress, password).run()
            else:   # an interrupted join that had completed: verified above
                health = assess(sub, facts)
                out(f"{node.name} is a member; nothing to do")
            membership.clear_departure(fleet, list(fleet.hosts), node)
            op.update_monitoring(replace(inv, nodes=tuple(n for n in inv.nodes if n is node or (
                n.name in db_nodes and n.name not in departed(facts)))))
        op.summary(health)
        return DeployResult(plan, health, progress.phases, fleet.connections_opened())


def _recover_joins(inv: Inventory, fleet: Fleet, facts, progress: Progress) -> bool:
    """Finish or roll back joins an earlier run left unverified (their marker is on the node)."""
    found = False
    for node in inv.nodes:
        f = facts[node.host]
        if f.joining and not f.error:
            seed = f.joining.get("seed") or choose_seed(inv, facts)[0].name
            membership.recover_interrupted_join(inv, fleet, node, f, seed, progress.say)
            found = True
    return found


def _cookie_for(inv: Inventory, dry: bool) -> Secret:
    if dry and inv.cluster.cookie_file and not inv.cluster.cookie_file.exists():
        # a dry run creates nothing: show the cookie as "created" without making the file
        return Secret("".join(_random.choice(COOKIE_ALPHABET) for _ in range(48)))
    return load_cookie(inv.cluster, create=not dry)


