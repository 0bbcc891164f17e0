"""`fab status`: the cluster as its nodes report it, read in parallel, one call per node."""

from __future__ import annotations

import json

import time
from typing import Callable

from . import probe, releases
from .database import sql_everywhere
from .errors import EasyClusterError
from .health import ClusterHealth, assess, departed, without_departed
from .inventory import Inventory
from .remote import Background, Fleet
from .secrets import load_password


def cluster_health(inv: Inventory) -> ClusterHealth:
    with Fleet(inv) as fleet:
        return observe(inv, fleet)


def observe(inv: Inventory, fleet: Fleet) -> ClusterHealth:
    """The cluster as its nodes report it now, read in parallel over the fleet's connections.
    Nodes removed or forgotten on purpose are listed as departed, not as failures."""
    sql = None
    if inv.cluster.database:   # the database as each node sees it, alongside the nodes' facts
        password = load_password(inv.cluster)
        worker = Background(lambda: sql_everywhere(fleet, password))
    facts = probe.gather(fleet, probe_network=False)
    if inv.cluster.database:
        sql = worker.result()
    gone = departed(facts)
    effective = without_departed(inv, facts, lambda _line: None)
    health = assess(effective, facts, sql)
    health.departed = {n.name: gone[n.name] for n in inv.nodes if n.name in gone}
    return health


def wait_for(inv: Inventory, fleet: Fleet, ready: Callable[[ClusterHealth], bool], bound: float,
             what: str, interval: float = 1.0) -> ClusterHealth:
    """Watch the cluster until ready(health) holds; after `bound` seconds raise, naming what
    is still wrong."""
    deadline = time.monotonic() + bound
    while True:
        health = observe(inv, fleet)
        if ready(health):
            return health
        if time.monotonic() > deadline:
            raise EasyClusterError(f"not {what} within {bound:.0f}s:\n  " + "\n  ".join(health.problems or ["?"]))
        time.sleep(interval)

def format_table(health: ClusterHealth, tables: bool = False) -> str:
    rows = [("node", "host", "role", "running", "unit (restarts)", "member", "in role", "sees running", "seen by",
             "sessions", "versions")]
    running = sum(1 for n in health.nodes if n.running)
    for n in health.nodes:
        rows.append((n.name, n.host, n.role, "yes" if n.running else ("NO" if n.reachable else "UNREACHABLE"),
                     f"{n.unit} ({n.restarts})" if n.reachable else "-", "yes" if n.member else "no",
                     "yes" if n.in_role else "no",
                     str(len(n.running_db_nodes)) if n.running else "-",
                     f"{len(n.seen_running_by)}/{running}",
                     str(n.sessions) if n.sessions is not None else "-",
                     f"{n.os or '-'} {n.ejabberd_version or '-'} "
                     f"OTP {releases.erlang_short(n.erlang_version) or n.otp_release or '-'} plugin {n.plugin_version or '-'}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    verdict = "healthy" if health.healthy else ("PARTITIONED" if health.partitioned else "NOT healthy")
    lines.append(f"cluster: {verdict}")
    lines += [f"  departed: {name} ({how} on {when})" for name, (how, when) in sorted(health.departed.items())]
    db = health.database
    if db:
        size = f", {db['size_bytes'] / 1e6:.1f} MB" if db.get("size_bytes") is not None else ""
        accounts = f", {db['accounts']} accounts" if db.get("accounts") is not None else ""
        lines.append(f"database: {db['where']}" + (f" (PostgreSQL {db['version']}{size}{accounts})" if db["version"]
                                                    else " (NOT reachable)") +
                     f"; reachable from {len(db['reachable_from'])}/{len(db['reachable_from']) + len(db['errors'])} "
                     "nodes")
    lines += [f"  - {p}" for p in health.problems]
    for n in health.nodes:
        if n.journal and (not n.running or not n.unit.startswith("active (running)")):
            lines.append(f"  journal of ejabberd.service on {n.host}:")
            lines += [f"    {line}" for line in n.journal]
    if tables:
        names = [n.name for n in health.nodes]
        lines.append("")
        lines.append("table".ljust(28) + "  ".join(n.split("@")[-1].ljust(16) for n in names))
        for table, holders in sorted(health.tables.items()):
            lines.append(table.ljust(28) + "  ".join(holders.get(n, "-").ljust(16) for n in names))
    return "\n".join(lines)


def format_json(health: ClusterHealth, tables: bool = False) -> str:
    data = health.as_dict()
    if tables:
        data["tables"] = health.tables
    return json.dumps(data, indent=2, sort_keys=True)
