"""`fab status`: the cluster as its nodes report it, read in parallel, one call per node."""

from __future__ import annotations

import json

from .. import releases
from ..health import ClusterHealth
from ..inventory import Inventory
from ..operation import operation
from ..progress import Out


def cluster_health(inv: Inventory, *, out: Out = print) -> ClusterHealth:
    """`fab status`: the cluster's health, read from every node at once (nothing changes)."""
    with operation(inv, "status", out=out) as op:
        return op.observe()


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
        if db.get("members"):
            lines.append("database members: " + ", ".join(
                (f"{m['host']} {m['role'] or '-'} {m['state'] or 'down'}" if m["patroni"] else
                 f"{m['host']} {'Patroni not running' if m['reachable'] else 'unreachable'}")
                + (f" (lag {m['lag_mb']} MB)" if m["lag_mb"] not in (None, "", 0) else "")
                + ("" if m["etcd"] else ", etcd down") for m in db["members"]))
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
