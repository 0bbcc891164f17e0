"""easycluster's alert rules, as shipped (templates/easycluster-rules.yml.j2), under Prometheus's
own rule tester: `promtool test rules` (Debian's prometheus package; make setup installs it).

Each case: series as the monitoring host scrapes them, a moment, and the alerts that must be
firing then (none: the rule must stay quiet). The expected annotations are the rule's own,
filled in here from the case's labels and value: a rule naming a label its series lack, or
a runbook that is not in docs/, fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from easycluster.inventory import parse_inventory
from easycluster.monitoring import rules

REPO = Path(__file__).resolve().parent.parent
INVENTORY = """
cluster: {name: prod, ejabberd_version: 24.12-3+deb13u2, domains: [example.com], cookie: {file: c},
          monitoring: {host: mon1, address: 10.0.0.9}}
nodes: [{host: xmpp1}, {host: xmpp2}]
"""
NODE1 = 'job="easycluster-nodes", instance="10.0.0.1:9100", host="xmpp1", node="ejabberd@xmpp1", role="master"'
NODE2 = 'job="easycluster-nodes", instance="10.0.0.2:9100", host="xmpp2", node="ejabberd@xmpp2", role="master"'
NODE1_LABELS = {"job": "easycluster-nodes", "instance": "10.0.0.1:9100", "host": "xmpp1", "node": "ejabberd@xmpp1",
                "role": "master"}
DB1 = 'job="easycluster-database", instance="10.0.0.7:9100", host="db1"'

# name, interval, {series: values}, eval_time, [(alertname, labels, value)] expected firing.
# (An interval of at most 5 minutes: a series is looked up 5 minutes back, and a gap between
# samples resets a rule's `for:`.)
CASES = [
    ("a host down for 30 s is not yet an alert", "15s", {f"up{{{NODE1}}}": "1 1 0x10"}, "1m", []),
    ("a host down for alert_after fires, naming it", "15s", {f"up{{{NODE1}}}": "1 1 0x10"}, "2m30s",
     [("EasyclusterNodeDown", {**NODE1_LABELS, "severity": "critical"}, 0)]),
    ("a host back clears it", "15s", {f"up{{{NODE1}}}": "1 1 0x8 1x10"}, "3m", []),
    ("ejabberd stopped: its metrics file grows old", "15s",
     {f"easycluster_metrics_written_timestamp_seconds{{{NODE1}}}": "0+15x8 120x20"}, "4m",
     [("EasyclusterNodeStopped", {**NODE1_LABELS, "severity": "critical"}, 120)]),
    ("ejabberd's metrics written on time: quiet", "15s",
     {f"easycluster_metrics_written_timestamp_seconds{{{NODE1}}}": "0+15x30"}, "6m", []),
    ("ejabberd's unit not active", "15s",
     {f'node_systemd_unit_state{{{NODE1}, name="ejabberd.service", state="active"}}': "1 0x10"}, "2m",
     [("EasyclusterNodeStopped", {**NODE1_LABELS, "name": "ejabberd.service", "state": "active",
                                  "severity": "critical"}, 0)]),
    ("a peer not running, seen from a node", "15s",
     {f'easycluster_peer_running{{{NODE1}, peer="ejabberd@xmpp2"}}': "1 0x10"}, "2m",
     [("EasyclusterPeerNotRunning", {**NODE1_LABELS, "peer": "ejabberd@xmpp2", "severity": "critical"}, 0)]),
    ("a partition", "15s", {f"easycluster_partitioned{{{NODE1}}}": "0 1x10"}, "2m",
     [("EasyclusterPartition", {**NODE1_LABELS, "severity": "critical"}, 1)]),
    ("no partition", "15s", {f"easycluster_partitioned{{{NODE1}}}": "0x10"}, "2m", []),
    ("a master without two tables", "15s",
     {f"easycluster_master{{{NODE1}}}": "1x10", f"easycluster_missing_tables{{{NODE1}}}": "0 2x10"}, "2m",
     [("EasyclusterTableCopyMissing", {**NODE1_LABELS, "severity": "critical"}, 1)]),
    ("a satellite holds no tables by design", "15s",
     {f"easycluster_master{{{NODE1}}}": "0x10", f"easycluster_missing_tables{{{NODE1}}}": "40x10"}, "2m", []),
    ("systemd restarting ejabberd", "1m",
     {f'node_systemd_service_restart_total{{{NODE1}, name="ejabberd.service"}}': "0 1 2 3 4"}, "4m",
     [("EasyclusterUnitRestarting", {**NODE1_LABELS, "name": "ejabberd.service", "severity": "critical"}, 4)]),
    ("one restart is no alert", "1m",
     {f'node_systemd_service_restart_total{{{NODE1}, name="ejabberd.service"}}': "0 1 1 1 1"}, "4m", []),
    ("versions mixed for over 2 hours", "4m",
     {f'easycluster_node_info{{{NODE1}, ejabberd_version="24.12", otp_release="27", plugin_version="1.15.0", '
      'os="Debian 13"}': "1x40",
      f'easycluster_node_info{{{NODE2}, ejabberd_version="26.07", otp_release="27", plugin_version="1.15.0", '
      'os="Debian 13"}': "1x40"}, "2h10m",
     [("EasyclusterMixedVersions", {"severity": "warning"}, 2)]),
    ("versions mixed for an hour (an upgrade under way): quiet", "4m",
     {f'easycluster_node_info{{{NODE1}, ejabberd_version="24.12", otp_release="27", plugin_version="1.15.0", '
      'os="Debian 13"}': "1x40",
      f'easycluster_node_info{{{NODE2}, ejabberd_version="26.07", otp_release="27", plugin_version="1.15.0", '
      'os="Debian 13"}': "1x40"}, "1h", []),
    ("a dets file at 1.8 GB", "1m",
     {f'easycluster_table_bytes{{{NODE1}, table="offline_msg", storage="disc_only_copies"}}': "1800000000x10"},
     "6m", [("EasyclusterDetsNearLimit", {**NODE1_LABELS, "table": "offline_msg", "storage": "disc_only_copies",
                                          "severity": "warning"}, 1800000000)]),
    ("a 1.8 GB table in memory is not dets", "1m",
     {f'easycluster_table_bytes{{{NODE1}, table="session", storage="ram_copies"}}': "1800000000x10"}, "6m", []),
    ("a courier backlog growing for 10 minutes", "1m",
     {f"easycluster_courier_unconfirmed{{{NODE1}}}": "2000+100x30"}, "25m",
     [("EasyclusterCourierBacklog", {**NODE1_LABELS, "severity": "warning"}, 4500)]),
    ("a big but shrinking backlog: quiet", "1m",
     {f"easycluster_courier_unconfirmed{{{NODE1}}}": "5000-100x30"}, "25m", []),
    ("the newest backup older than a day", "4m",
     {f"easycluster_backup_newest_timestamp_seconds{{{NODE1}}}": "0x400",
      f"easycluster_backup_newest_timestamp_seconds{{{NODE2}}}": "3600x400"}, "25h1m",
     [("EasyclusterBackupOld", {"severity": "warning"}, 86460)]),
    ("a backup of an hour ago on one node: quiet", "4m",
     {f"easycluster_backup_newest_timestamp_seconds{{{NODE1}}}": "0x400",
      f"easycluster_backup_newest_timestamp_seconds{{{NODE2}}}": "86400x400"}, "25h", []),
    ("no backup anywhere for a day", "4m", {f"easycluster_sessions{{{NODE1}}}": "10x400"}, "25h",
     [("EasyclusterBackupNone", {"severity": "warning"}, 1)]),
    ("a certificate ending in 10 days", "1m",
     {f'easycluster_certificate_expiry_timestamp_seconds{{{NODE1}, file="/etc/ejabberd/xmpp.pem", use="c2s"}}':
      "864000x10"}, "1m",
     [("EasyclusterCertificateExpiring", {**NODE1_LABELS, "file": "/etc/ejabberd/xmpp.pem", "use": "c2s",
                                          "severity": "warning"}, 863940)]),
    ("a certificate ending in 90 days: quiet", "1m",
     {f'easycluster_certificate_expiry_timestamp_seconds{{{NODE1}, file="/etc/ejabberd/xmpp.pem", use="c2s"}}':
      "7776000x10"}, "1m", []),
    ("the database unreachable from a node", "15s",
     {f'easycluster_database_up{{{NODE1}, vhost="example.com"}}': "1 0x10"}, "2m",
     [("EasyclusterDatabaseUnreachable", {**NODE1_LABELS, "vhost": "example.com", "severity": "critical"}, 0)]),
    ("a database host down", "15s", {f"up{{{DB1}}}": "1 0x10"}, "2m",
     [("EasyclusterDatabaseHostDown", {"job": "easycluster-database", "instance": "10.0.0.7:9100", "host": "db1",
                                       "severity": "critical"}, 0)]),
]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> tuple[Path, dict]:
    if not shutil.which("promtool"):
        pytest.fail("promtool is missing: `make setup` installs Debian's prometheus package (scripts/system-packages.sh)")
    d = tmp_path_factory.mktemp("rules")
    text = rules(parse_inventory(INVENTORY, d / "inventory.yml"))
    (d / "rules.yml").write_text(text)
    checked = subprocess.run(["promtool", "check", "rules", str(d / "rules.yml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    by_name = {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]}
    return d, by_name


def annotations(rule: dict, labels: dict, value: float) -> dict:
    """The rule's annotations as Prometheus fills them in (only $labels.X and $value are used)."""
    def fill(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        return text.replace("{{ $value }}", f"{value:g}" if abs(value) < 1e21 else str(value))
    return {k: fill(v) for k, v in rule["annotations"].items()}


@pytest.mark.parametrize("name, interval, series, at, expected", CASES, ids=[c[0] for c in CASES])
def test_the_rules_fire_when_they_should_and_only_then(shipped, name, interval, series, at, expected):
    d, by_name = shipped
    if expected:
        tests = [{"eval_time": at, "alertname": alertname,
                  "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations(by_name[a], labels, value)}
                                 for a, labels, value in expected if a == alertname]}
                 for alertname in sorted({a for a, _, _ in expected})]
    else:   # quiet: no rule fires
        tests = [{"eval_time": at, "alertname": a, "exp_alerts": []} for a in sorted(by_name)]
    case = {"rule_files": [str(d / "rules.yml")], "evaluation_interval": "15s",
            "tests": [{"interval": interval, "input_series": [{"series": s, "values": v} for s, v in series.items()],
                       "alert_rule_test": tests}]}
    path = d / f"{re.sub(r'[^a-z0-9]+', '-', name)}.test.yml"
    path.write_text(yaml.safe_dump(case, sort_keys=False))
    r = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_case_that_fires_it_and_a_runbook_in_docs(shipped):
    _, by_name = shipped
    fired = {a for *_, expected in CASES for a, _, _ in expected}
    assert fired == set(by_name), f"rules without a firing case: {set(by_name) - fired}"
    for name, rule in by_name.items():
        paths = re.findall(r"(docs/[\w./-]+\.md)(#[\w-]+)?", rule["annotations"]["runbook"])
        assert paths, f"{name}: its runbook annotation names no page of docs/"
        for page, anchor in paths:
            text = (REPO / page).read_text()
            if anchor:
                headings = {re.sub(r"[^\w -]", "", h.strip().lower()).replace(" ", "-")
                            for h in re.findall(r"^#+ (.+)$", text, re.M)}
                assert anchor[1:] in headings, f"{name}: {page}{anchor}: no such heading"


def test_the_urgent_alerts_wait_alert_after():
    text = rules(parse_inventory(INVENTORY.replace("{host: mon1, address: 10.0.0.9}", "{host: mon1, address: 10.0.0.9, alert_after: 15}"), Path("i.yml")))
    fors = {r["alert"]: r.get("for") for g in yaml.safe_load(text)["groups"] for r in g["rules"]}
    assert fors["EasyclusterNodeDown"] == fors["EasyclusterPartition"] == "15s"
    assert fors["EasyclusterMixedVersions"] == "2h"
