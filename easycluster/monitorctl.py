"""The monitoring host (cluster.monitoring), over its SSH connection: its facts, its packages,
easycluster's files and its units (what easycluster.monitoring plans)."""

from __future__ import annotations

from .monitoring import (APPLY, INSTALL, MONITOR_PACKAGES, MONITOR_UNITS, WRITE, MonitorFacts, MonitorStep,
                         parse_monitor_facts)
from .nodectl import configure
from .paths import ALERTMANAGER_CONFIG, ALERTMANAGER_PORT, PROMETHEUS_CONFIG, PROMETHEUS_PORT, PROMETHEUS_RULES
from .progress import Progress
from .remote import Host
from .scripts import render

APPLY_BOUND = 60   # seconds for Prometheus and Alertmanager to answer after a (re)start


def probe(host: Host) -> MonitorFacts:
    r = host.script(render("monitor_probe", packages=list(MONITOR_PACKAGES), units=list(MONITOR_UNITS),
                           files=[PROMETHEUS_RULES, PROMETHEUS_CONFIG, ALERTMANAGER_CONFIG]),
                    what="gathering the monitoring host's facts", timeout=30)
    return parse_monitor_facts(r.stdout)


def apply(host: Host, steps: list[MonitorStep], progress: Progress) -> None:
    """The plan's steps, in order: packages, files (backed up when replaced), then the check
    and the reload."""
    for s in steps:
        if s.action == INSTALL:
            with progress.step(host.name, s.summary):
                host.script(render("monitor_install", packages=list(MONITOR_PACKAGES)), what="installing Prometheus",
                            timeout=900)
    files = [s.file for s in steps if s.action == WRITE and s.file is not None]
    if files:
        with progress.step(host.name, "write " + ", ".join(f.path for f in files)):
            configure(host, files, plugin=False)
    for s in steps:
        if s.action == APPLY:
            with progress.step(host.name, s.summary):
                host.script(render("monitor_apply", bound=APPLY_BOUND, prometheus_port=PROMETHEUS_PORT,
                                   alertmanager_port=ALERTMANAGER_PORT), what="checking and loading Prometheus's files",
                            timeout=APPLY_BOUND + 60)
