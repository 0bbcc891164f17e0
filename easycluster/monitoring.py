"""cluster.monitoring: what is written where (pure), docs/monitoring.md says why.

- On every node and database host: Debian's node-exporter with easycluster's settings
  (render.exporter_files: on a node written with its other files; on a database host by this
  plan), reachable only from the monitoring host (the hosts' firewalls); on a node it
  also serves the plugin's metrics (easy_cluster_metrics writes them into METRICS_DIR).
- On the monitoring host: Debian's Prometheus, scraping every node, database host and itself, with
  easycluster's alert rules, and Alertmanager sending to the inventory's receivers
  (`monitor_files`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from .inventory import Inventory
from .paths import (ALERTMANAGER_CONFIG, ALERTMANAGER_PORT, NODE_EXPORTER_PORT, PROMETHEUS_CONFIG, PROMETHEUS_PORT,
                    PROMETHEUS_RULES)
from .plan import file_diff
from .render import ManagedFile, exporter_files, render

# Debian's packages: on the monitoring host, and on every host it scrapes.
MONITOR_PACKAGES = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter")
EXPORTER_PACKAGES = ("prometheus-node-exporter",)


@dataclass(frozen=True)
class Target:
    """A host Prometheus scrapes: where (address) and the labels its series get."""
    host: str
    address: str
    name: str = ""        # a node's Erlang name
    role: str = ""        # master | satellite (nodes)


def rules(inv: Inventory) -> str:
    mon = inv.cluster.monitoring
    assert mon is not None
    return render("easycluster-rules.yml.j2", cluster=inv.cluster, monitoring=mon, urgent=f"{mon.alert_after}s")


def monitor_files(inv: Inventory, nodes: list[Target], databases: list[Target]) -> list[ManagedFile]:
    """The monitoring host's files: Prometheus's configuration (its targets: `nodes`,
    `databases` and itself), the rules, Alertmanager's configuration."""
    mon = inv.cluster.monitoring
    assert mon is not None
    prometheus = render("prometheus.yml.j2", cluster=inv.cluster, monitoring=mon, nodes=nodes, databases=databases,
                        rules=PROMETHEUS_RULES, exporter_port=NODE_EXPORTER_PORT, prometheus_port=PROMETHEUS_PORT,
                        alertmanager_port=ALERTMANAGER_PORT)
    alertmanager = render("alertmanager.yml.j2", cluster=inv.cluster, monitoring=mon,
                          alertmanager_port=ALERTMANAGER_PORT)
    return [ManagedFile(PROMETHEUS_RULES, rules(inv), 0o644, "root", "root", restart=False, live=True),
            ManagedFile(PROMETHEUS_CONFIG, prometheus, 0o644, "root", "root", restart=False, live=True),
            ManagedFile(ALERTMANAGER_CONFIG, alertmanager, 0o644, "root", "root", restart=False, live=True)]


# ------------------------------------------------------------------------------ the monitoring host
MONITOR_UNITS = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter")
INSTALL, WRITE, APPLY = "install", "write", "apply"


@dataclass
class MonitorFacts:
    """The monitoring host as monitor_probe.sh found it."""
    packages: dict[str, bool] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)       # unit -> systemctl is-active
    files: dict[str, str | None] = field(default_factory=dict)   # path -> content (None: absent)
    error: str = ""


def parse_monitor_facts(text: str) -> MonitorFacts:
    facts = MonitorFacts()
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        name, _, value = rest.partition(" ")
        if kind == "package":
            facts.packages[name] = value == "yes"
        elif kind == "unit":
            facts.units[name] = value
        elif kind == "file":
            facts.files[name] = None if value == "-" else base64.b64decode(value).decode()
    return facts


def targets(inv: Inventory) -> list[Target]:
    """The nodes Prometheus scrapes: every node of `inv` (the caller leaves out those taken out on
    purpose), by the host part of its node name (what every peer resolves)."""
    return [Target(n.host, n.node_host, n.name, n.role) for n in inv.nodes]


def database_targets(inv: Inventory) -> list[Target]:
    """The database hosts easycluster provisions (cluster.database.host or .hosts): Prometheus
    scrapes their node-exporter, by the name the inventory gives them."""
    db = inv.cluster.database
    return [Target(h, h) for h in db.hosts] if db and db.provisioned else []


@dataclass(frozen=True)
class MonitorStep:
    host: str
    action: str          # INSTALL | WRITE | APPLY | EXPORTER
    summary: str
    diff: str = ""
    file: ManagedFile | None = None


EXPORTER = "exporter"    # node-exporter (re)started on a database host


def monitor_plan(inv: Inventory, facts: dict[str, MonitorFacts], nodes: list[Target]) -> list[MonitorStep]:
    """What the monitoring host needs (its packages, easycluster's files, its units running with
    them: a reload after a write, a start if one is not running), then what each database host
    needs for node-exporter. `facts`: by host, the monitoring host's and every database host's."""
    mon = inv.cluster.monitoring
    assert mon is not None
    f = facts[mon.host]
    steps = []
    missing = [p for p in MONITOR_PACKAGES if not f.packages.get(p)]
    if missing:
        steps.append(MonitorStep(mon.host, INSTALL, f"install {', '.join(missing)}"))
    steps += _writes(mon.host, monitor_files(inv, nodes, database_targets(inv)), f)
    stopped = [u for u in MONITOR_UNITS if f.units.get(u) != "active"]
    if steps or stopped:
        steps.append(MonitorStep(mon.host, APPLY, "check the files (promtool, amtool), then " + (
            "reload Prometheus and Alertmanager" if not stopped or missing else f"start {', '.join(stopped)}")))
    for t in database_targets(inv):
        f = facts[t.host]
        found = []
        if not f.packages.get(EXPORTER_PACKAGES[0]):
            found.append(MonitorStep(t.host, INSTALL, f"install {EXPORTER_PACKAGES[0]}"))
        found += _writes(t.host, exporter_files(inv, t.host), f)     # written: restarted (configure.sh)
        if not found and f.units.get("prometheus-node-exporter") != "active":
            found.append(MonitorStep(t.host, EXPORTER, "start prometheus-node-exporter"))
        steps += found
    return steps


def _writes(host: str, files: list[ManagedFile], f: MonitorFacts) -> list[MonitorStep]:
    steps = []
    for mf in files:
        current, new = f.files.get(mf.path), mf.data().decode()
        if current != new:
            steps.append(MonitorStep(host, WRITE, f"write {mf.path}", file_diff(current, new, mf.path), mf))
    return steps


def format_monitor_plan(steps: list[MonitorStep]) -> str:
    out = []
    for s in steps:
        out.append(f"[{s.host}] {s.summary}")
        out.extend(f"[{s.host}]   {line}" for line in s.diff.rstrip("\n").splitlines())
    return "\n".join(out)
