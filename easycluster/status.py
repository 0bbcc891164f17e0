"""`fab status`: the cluster as its nodes report it, read in parallel, one call per node."""

from __future__ import annotations

import json

from . import facts as factmod
from .health import ClusterHealth, assess
from .inventory import Inventory
from .membership import departed, without_departed
from .remote import Fleet


def cluster_health(inv: Inventory) -> ClusterHealth:
    """Nodes removed or forgotten on purpose are listed as departed, not as failures."""
    with Fleet(inv) as fleet:
        facts = factmod.gather(fleet, probe_network=False)
    gone = departed(facts)
    effective = without_departed(inv, facts, lambda _line: None)
    health = assess(effective, facts)
    health.departed = {n.name: gone[n.name] for n in inv.nodes if n.name in gone}
    return health


def format_table(health: ClusterHealth, tables: bool = False) -> str:
    rows = [("node", "host", "running", "member", "master", "sees running", "sessions")]
    for n in health.nodes:
        rows.append((n.name, n.host, "yes" if n.running else ("NO" if n.reachable else "UNREACHABLE"),
                     "yes" if n.member else "no", "yes" if n.master else "no",
                     str(len(n.running_db_nodes)) if n.running else "-",
                     str(n.sessions) if n.sessions is not None else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    verdict = "healthy" if health.healthy else ("PARTITIONED" if health.partitioned else "NOT healthy")
    lines.append(f"cluster: {verdict}")
    lines += [f"  departed: {name} ({how} on {when})" for name, (how, when) in sorted(health.departed.items())]
    lines += [f"  - {p}" for p in health.problems]
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
