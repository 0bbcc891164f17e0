"""The monitoring host (cluster.monitoring), over its SSH connection: its facts, its packages,
easycluster's files and its units; and node-exporter on the database hosts (what
easycluster.monitoring plans)."""

from __future__ import annotations

from .monitoring import (APPLY, EXPORTER, EXPORTER_PACKAGES, INSTALL, MONITOR_PACKAGES, MONITOR_UNITS, WRITE,
                         MonitorFacts, MonitorStep, parse_monitor_facts)
from .nodectl import configure
from .paths import (ALERTMANAGER_CONFIG, ALERTMANAGER_PORT, NODE_EXPORTER_DEFAULT, PROMETHEUS_CONFIG, PROMETHEUS_PORT,
                    PROMETHEUS_RULES)
from .progress import Progress
from .remote import Host, at_once
from .scripts import render

APPLY_BOUND = 60   # seconds for Prometheus and Alertmanager to answer after a (re)start


def probe(host: Host, packages=MONITOR_PACKAGES, units=MONITOR_UNITS,
          files=(PROMETHEUS_RULES, PROMETHEUS_CONFIG, ALERTMANAGER_CONFIG)) -> MonitorFacts:
    r = host.script(render("monitor_probe", packages=list(packages), units=list(units), files=list(files)),
                    what="gathering the monitoring's facts", timeout=30)
    return parse_monitor_facts(r.stdout)


def probe_all(monitor: Host, databases: list[Host]) -> dict[str, MonitorFacts]:
    """The monitoring host's facts and node-exporter's on each database host, all at once."""
    def one(h: Host) -> MonitorFacts:
        if h is monitor:
            return probe(h)
        return probe(h, EXPORTER_PACKAGES, ("prometheus-node-exporter",), (NODE_EXPORTER_DEFAULT,))
    found = at_once([monitor, *databases], one)
    for name, r in found.items():
        if isinstance(r, Exception):
            raise r
    return found


def apply(monitor: Host, databases: list[Host], steps: list[MonitorStep], progress: Progress) -> None:
    """The plan's steps, host by host, in order: packages, files (backed up when replaced), then
    the check and the reload (the monitoring host) or node-exporter's start (a database host)."""
    hosts = {h.name: h for h in (monitor, *databases)}
    for name in dict.fromkeys(s.host for s in steps):
        host, mine = hosts[name], [s for s in steps if s.host == name]
        for s in mine:
            if s.action == INSTALL:
                with progress.step(name, s.summary):
                    wanted = MONITOR_PACKAGES if host is monitor else EXPORTER_PACKAGES
                    host.script(render("monitor_install", packages=list(wanted)), what="installing Prometheus's "
                                "packages", timeout=900)
        files = [s.file for s in mine if s.action == WRITE and s.file is not None]
        if files:
            with progress.step(name, "write " + ", ".join(f.path for f in files)):
                configure(host, files, plugin=False)
        for s in mine:
            if s.action == APPLY:
                with progress.step(name, s.summary):
                    host.script(render("monitor_apply", bound=APPLY_BOUND, prometheus_port=PROMETHEUS_PORT,
                                       alertmanager_port=ALERTMANAGER_PORT),
                                what="checking and loading Prometheus's files", timeout=APPLY_BOUND + 60)
            elif s.action == EXPORTER:
                with progress.step(name, s.summary):
                    host.script(render("exporter_start"), what="starting node-exporter", timeout=60)
