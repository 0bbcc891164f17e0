"""`fab stop-cluster` and `fab start-cluster`: a whole cluster down and up again.

Mnesia makes a node that stopped early wait, at start, for the tables of the node that
stopped last (it may hold newer writes): started one by one in the wrong order, a cluster
hangs (ejabberd #3843, #1184). So stop-cluster stops the nodes one at a time and records the
order on every host, and start-cluster starts every stopped node at once and watches until
all are back. When a node never comes back, it names it and says what to run.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from .. import nodectl, probe
from ..errors import EasyClusterError
from ..health import ClusterHealth, assess
from ..inventory import Inventory, Node
from ..operation import operation
from ..paths import EJABBERD_ERROR_LOG, STOP_ORDER
from ..progress import Out, Progress
from .. import refusals
from ..remote import Fleet, Host
from ..scripts import render
from ..probe import wait_for


def stop_cluster(inv: Inventory, *, out: Out = print, dry: bool = False, lock_wait: float = 0) -> list[str]:
    """Stop every running node, one at a time, the first node of the inventory last; record
    the order on every host. Returns the order."""
    with operation(inv, "stop-cluster", out=out, lock_wait=lock_wait) as op:
        fleet, progress = op.fleet, op.progress
        facts = op.look(network=False, via=False, phase=None)
        effective = op.inv
        reachable = [n.host for n in effective.nodes if facts[n.host].reachable]
        running = [n for n in reversed(effective.nodes) if facts[n.host].running or facts[n.host].beam_running]
        if not running:
            progress.say("cluster", "no node is running: nothing to stop")
            return []
        if op.dry_run(dry, f"would stop, one at a time, in this order: {', '.join(n.name for n in running)} "
                           "(and record the order on every host)"):
            return [n.name for n in running]
        with op.lock(reachable):
            order = []
            for node in running:
                with progress.step(node.host, f"stop {node.name}"):
                    nodectl.stop(fleet[node.host])
                order.append(node.name)
            record = json.dumps({"order": order, "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
            fleet.parallel(lambda h: h.script(render("stop_order", record=record), timeout=15,
                                              what="recording the stop order"), reachable)
        progress.say("cluster", f"stopped in this order: {', '.join(order)}; {order[-1]} stopped last "
                                "(recorded on every host; `fab start-cluster` brings them back)")
        return order


def start_cluster(inv: Inventory, *, out: Out = print, dry: bool = False, lock_wait: float = 0,
                  wait: float = 120, without: tuple[str, ...] = ()) -> ClusterHealth:
    """Start every stopped node at once and wait until all run, each with every table.

    `without`: hosts lost for good. The survivors then load their own copies of the tables
    instead of waiting for the lost nodes (writes only those had are lost)."""
    lost = [inv.node(h) for h in without]
    with operation(inv, "start-cluster", out=out, lock_wait=lock_wait) as op:
        fleet, progress = op.fleet, op.progress
        facts = op.look(network=False, via=False, phase=None)
        effective = op.inv
        survivors = refusals.start_cluster(effective, facts, lost)
        dead = [n for n in survivors if not facts[n.host].reachable]
        to_start = [n for n in survivors if facts[n.host].reachable and not facts[n.host].beam_running]
        for node in survivors:
            if node not in to_start and node not in dead:
                progress.say(node.host, "already running" if facts[node.host].running
                             else "starting (waiting for its tables)")
        if op.dry_run(dry, f"would start at once: {', '.join(n.name for n in to_start) or '(none)'}" +
                      (f"; then load the tables on {refusals.force_load_host(survivors, facts).name} without "
                       f"waiting for {', '.join(n.name for n in lost)}" if lost else "") +
                      (f"; unreachable: {', '.join(n.host for n in dead)}" if dead else "")):
            return assess(effective, facts)

        def launch(h: Host) -> None:
            with progress.step(h.name, f"start {h.node.name}"):
                nodectl.launch(h)
        # no other change of the cluster while its nodes start (held for the starts only: the
        # wait that follows only watches)
        with op.lock([n.host for n in survivors if n not in dead]):
            results = fleet.parallel(launch, [n.host for n in to_start])
            if lost:
                _force_load(inv, fleet, survivors, facts, progress)
        failed = {h: r for h, r in results.items() if isinstance(r, Exception)}
        health = _wait_back(inv, fleet, progress, survivors, facts, {n.host for n in dead} | set(failed),
                            bool(lost), wait)
        # the record served this start; a later outage must not be read in its light
        fleet.parallel(lambda h: nodectl.remove(h, STOP_ORDER, check=False, timeout=15),
                       [n.host for n in survivors if n not in dead])
        if lost:
            progress.say("cluster", f"{len(survivors)} nodes run without {', '.join(n.name for n in lost)}; "
                                    "take the lost node(s) out of the schema: " +
                                    "; ".join(f"`fab forget-node --host {n.host}`" for n in lost))
        return health


def _force_load(inv: Inventory, fleet: Fleet, survivors: list[Node], facts, progress: Progress) -> None:
    """Load the tables on one survivor (the last of them to stop, if known); the others then
    load from it. Loading on several from their own disks could leave them with different data."""
    first = refusals.force_load_host(survivors, facts)
    with progress.step(first.host, "load its own copies of the tables (not waiting for the lost nodes)"):
        answer = _call_when_up(fleet[first.host], first)
    progress.say(first.host, f"  {answer.get('tables')} tables loaded")


def _call_when_up(host, node: Node) -> dict:
    """The node was just launched: its VM needs a moment before it answers RPC."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return nodectl.node_call(host, node.name, "force_load")
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def worth_waiting_for(survivors: list[Node], cannot: set[str], order: list[str], forced: bool) -> list[Node]:
    """The survivors start-cluster waits for (pure). `cannot`: the hosts that cannot start
    (unreachable, or their launch failed); `order`: the node names as the last `fab
    stop-cluster` stopped them; `forced`: one survivor was made to load its own copies
    (--without). When every survivor can start: all of them. Otherwise the others wait for
    the tables of the node that stopped last, which holds the newest data: they are worth
    waiting for only if that node is among them (or a survivor was forced to load); if it
    cannot start, or nobody knows which it was (no record: Mnesia's own choice, perhaps a node
    that cannot start), none is: "all back" cannot happen, and waiting tells nothing more."""
    able = [n for n in survivors if n.host not in cannot]
    if len(able) == len(survivors) or forced or (order and order[-1] in {n.name for n in able}):
        return able
    return []


LAUNCH_BOUND = 20   # seconds for a launched node's VM to show (the advice tells a VM waiting from none)


def _wait_back(inv: Inventory, fleet: Fleet, progress: Progress, survivors: list[Node], facts,
               cannot: set[str], forced: bool, wait: float) -> ClusterHealth:
    """Watch until the survivors worth waiting for run, each in its role, with no partition
    (at most `wait` seconds). Then, if a survivor cannot start (`cannot`: its host), or they did
    not come back, the advice (_stuck_advice), at once: not after waiting the whole bound for
    nodes that cannot come back."""
    watched = {n.name for n in worth_waiting_for(survivors, cannot, refusals.stop_order(facts), forced)}
    health = None
    try:   # the whole inventory is observed: the health returned shows the lost nodes too
        with progress.phase("wait"):
            if watched or not cannot:
                health = wait_for(inv, fleet, lambda h: all(n.running and n.in_role and n.unit_ok for n in h.nodes
                                                            if n.name in watched)
                                  and not h.partitioned, wait, "all back")
            else:
                _vms_shown(fleet, [n.host for n in survivors if n.host not in cannot], min(wait, LAUNCH_BOUND))
    except EasyClusterError:
        raise EasyClusterError(_stuck_advice(fleet, survivors, facts, wait)) from None
    if cannot or health is None:   # (health is None only when some cannot start)
        raise EasyClusterError(_stuck_advice(fleet, survivors, facts, wait, cannot=cannot))
    return health


def _vms_shown(fleet: Fleet, hosts: list[str], bound: float) -> None:
    """Until each host's node runs or has its VM up, or its unit gave up (at most `bound`
    seconds): a node launched a moment ago has no VM yet, and the advice would read it as down."""
    deadline = time.monotonic() + bound
    while hosts and time.monotonic() < deadline:
        now = probe.gather(fleet, hosts, probe_network=False)
        hosts = [h for h in hosts if now[h].reachable and not (now[h].running or now[h].beam_running)
                 and now[h].unit.get("ActiveState") not in ("failed", "inactive")]
        if hosts:
            time.sleep(0.5)


def _stuck_advice(fleet: Fleet, survivors: list[Node], facts, wait: float, cannot: set[str] = frozenset()) -> str:
    """Which nodes are not back, which wait for them, and what the operator runs next. `cannot`:
    the hosts that cannot start, said at once rather than after the whole wait."""
    now = probe.gather(fleet, [n.host for n in survivors], probe_network=False)
    missing = [n for n in survivors if not now[n.host].running]
    down = [n for n in missing if not now[n.host].beam_running]
    order = refusals.stop_order(facts)
    lines = [f"the cluster did not come back within {wait:.0f}s:" if not cannot else
             f"the cluster cannot come back whole ({', '.join(sorted(cannot))} cannot start; the others were "
             "not waited for beyond what they can do):"]
    for n in missing:
        lines.append(f"  {n.name}: " + ("unreachable over SSH" if now[n.host].error else "not running" if n in down
                                        else "its VM runs, but ejabberd waits for tables held by nodes not back"))
    if order:
        lines.append(f"  `fab stop-cluster` stopped {order[-1]} last: it holds the newest data")
    if down:
        lines.append(f"bring {', '.join(n.name for n in down)} back (boot the host), then `fab start-cluster` again;")
        lines.append(f"if lost for good: `fab start-cluster --without {','.join(n.host for n in down)}` (the others "
                     "load their own copies; writes only the lost nodes had are gone), then "
                     + "; ".join(f"`fab forget-node --host {n.host}`" for n in down))
    else:
        lines.append(f"look at {EJABBERD_ERROR_LOG} on the nodes above, then `fab start-cluster` again")
    return "\n".join(lines)
