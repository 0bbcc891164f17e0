"""cluster.monitoring, pure: what is written on the nodes and on the monitoring host, and the
monitoring host's plan from its facts (case table). The files are checked with Prometheus's own
promtool; the lab test (tests/test_monitoring_lab.py) runs them for real."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
import yaml

from easycluster.inventory import parse_inventory
from easycluster.monitoring import (APPLY, EXPORTER, INSTALL, MONITOR_PACKAGES, MONITOR_UNITS, WRITE, MonitorFacts,
                                    database_targets, monitor_files, monitor_plan, parse_monitor_facts, targets)
from easycluster.paths import (ALERTMANAGER_CONFIG, METRICS_DIR, NODE_EXPORTER_DEFAULT, NODE_EXPORTER_PORT,
                               PROMETHEUS_CONFIG, PROMETHEUS_RULES)
from easycluster.plan import packages
from easycluster.render import exporter_files, firewall_files, managed_files
from easycluster.secrets import Secret

BASE = """
cluster: {name: prod, ejabberd_version: 24.12-3+deb13u2, domains: [example.com], cookie: {file: c}%s}
nodes: [{host: xmpp1}, {host: xmpp2}, {host: xmpp3, role: satellite}]
"""
WATCHED = BASE % (", monitoring: {host: mon1, address: 10.0.0.9, webhooks: [https://hooks.example.com/a], "
                  "email: {to: [ops@example.com], from: alerts@example.com, smarthost: 'mail.example.com:587'}}")


def inv(text: str = WATCHED):
    return parse_inventory(text, Path("/srv/inv.yml"))


def test_the_nodes_firewall_lets_only_the_monitoring_host_reach_node_exporter():
    rules = firewall_files(inv(), inv().nodes[0], ["10.0.0.1", "10.0.0.2"])[1].content
    assert f"tcp dport {NODE_EXPORTER_PORT} ip saddr 10.0.0.9 accept" in rules
    assert f"tcp dport {NODE_EXPORTER_PORT} reject with tcp reset" in rules
    plain = firewall_files(inv(BASE % ""), inv(BASE % "").nodes[0], ["10.0.0.1"])[1].content
    assert str(NODE_EXPORTER_PORT) not in plain


def test_node_exporter_is_installed_and_configured_only_with_monitoring():
    assert "prometheus-node-exporter" in packages(inv())
    assert "prometheus-node-exporter" not in packages(inv(BASE % ""))

    def exporter(i):
        return [f for f in managed_files(i, i.nodes[0], "10.0.0.1", Secret("c"), members=["10.0.0.1"])
                if f.path == NODE_EXPORTER_DEFAULT]
    assert exporter(inv(BASE % "")) == []
    [f] = exporter(inv())
    assert f.live and not f.restart
    assert f"--collector.textfile.directory={METRICS_DIR}" in f.content
    assert f"--web.listen-address=:{NODE_EXPORTER_PORT}" in f.content
    assert "--collector.systemd.enable-restarts-metrics" in f.content


def test_prometheus_scrapes_every_node_by_its_name_and_itself_and_passes_promtool(tmp_path):
    i = inv()
    files = {f.path: f.content for f in monitor_files(i, targets(i), [])}
    assert set(files) == {PROMETHEUS_RULES, PROMETHEUS_CONFIG, ALERTMANAGER_CONFIG}
    config = yaml.safe_load(files[PROMETHEUS_CONFIG])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    nodes = jobs["easycluster-nodes"]["static_configs"]
    assert [(c["targets"], c["labels"]) for c in nodes] == [
        (["xmpp1:9100"], {"host": "xmpp1", "node": "ejabberd@xmpp1", "role": "master"}),
        (["xmpp2:9100"], {"host": "xmpp2", "node": "ejabberd@xmpp2", "role": "master"}),
        (["xmpp3:9100"], {"host": "xmpp3", "node": "ejabberd@xmpp3", "role": "satellite"})]
    assert jobs["monitoring"]["static_configs"][0]["targets"] == ["localhost:9100", "localhost:9090", "localhost:9093"]
    assert config["rule_files"] == [PROMETHEUS_RULES]
    assert config["global"]["external_labels"] == {"cluster": "prod"}
    (tmp_path / "rules.yml").write_text(files[PROMETHEUS_RULES])
    (tmp_path / "prometheus.yml").write_text(files[PROMETHEUS_CONFIG].replace(PROMETHEUS_RULES, str(tmp_path / "rules.yml")))
    r = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_cluster_of_no_node_left_is_still_a_valid_configuration(tmp_path):
    i = inv()
    files = {f.path: f.content for f in monitor_files(i, [], [])}
    config = yaml.safe_load(files[PROMETHEUS_CONFIG])
    assert {j["job_name"]: j["static_configs"] for j in config["scrape_configs"]}["easycluster-nodes"] == []


def test_alertmanager_sends_to_the_inventorys_receivers():
    am = yaml.safe_load({f.path: f.content for f in monitor_files(inv(), [], [])}[ALERTMANAGER_CONFIG])
    [receiver] = am["receivers"]
    assert am["route"]["receiver"] == receiver["name"]
    assert receiver["email_configs"] == [{"to": "ops@example.com", "from": "alerts@example.com",
                                          "smarthost": "mail.example.com:587", "send_resolved": True}]
    assert receiver["webhook_configs"] == [{"url": "https://hooks.example.com/a", "send_resolved": True}]
    bare = inv(BASE % ", monitoring: {host: mon1, address: 10.0.0.9}")
    [receiver] = yaml.safe_load({f.path: f.content for f in monitor_files(bare, [], [])}[ALERTMANAGER_CONFIG])["receivers"]
    assert set(receiver) == {"name"}


def _facts(packages=True, units="active", files="current") -> dict[str, MonitorFacts]:
    i = inv()
    current = {f.path: f.content for f in monitor_files(i, targets(i), [])}
    return {"mon1": MonitorFacts(packages={p: packages for p in MONITOR_PACKAGES},
                                 units={u: units for u in MONITOR_UNITS},
                                 files={p: (c if files == "current" else None if files == "none" else c + "# edited\n")
                                        for p, c in current.items()})}


# facts -> the actions planned, in order
CASES = [
    ("a new host: install, write, start", _facts(False, "inactive", "none"), [INSTALL, WRITE, WRITE, WRITE, APPLY]),
    ("as planned: nothing", _facts(), []),
    ("edited by hand: written back and reloaded", _facts(files="edited"), [WRITE, WRITE, WRITE, APPLY]),
    ("a unit stopped: started", _facts(units="failed"), [APPLY]),
]


@pytest.mark.parametrize("facts, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_monitoring_hosts_plan(facts, expected):
    i = inv()
    steps = monitor_plan(i, facts, targets(i))
    assert [s.action for s in steps] == expected
    for s in steps:
        assert s.host == "mon1"
        if s.action == WRITE:
            assert s.diff and s.file is not None


def test_a_node_taken_out_is_no_longer_scraped():
    i = inv()
    steps = monitor_plan(i, _facts(), targets(i.__class__(**{**i.__dict__, "nodes": i.nodes[:2]})))
    [write] = [s for s in steps if s.action == WRITE]
    assert write.file.path == PROMETHEUS_CONFIG
    assert "-      - targets: [\"xmpp3:9100\"]" in write.diff


def test_the_probes_output_is_read():
    text = (f"package prometheus yes\npackage prometheus-alertmanager no\nunit prometheus active\n"
            f"unit prometheus-alertmanager inactive\nfile {PROMETHEUS_CONFIG} "
            f"{base64.b64encode(b'global: {}').decode()}\nfile {PROMETHEUS_RULES} -\n")
    f = parse_monitor_facts(text)
    assert f.packages == {"prometheus": True, "prometheus-alertmanager": False}
    assert f.units == {"prometheus": "active", "prometheus-alertmanager": "inactive"}
    assert f.files == {PROMETHEUS_CONFIG: "global: {}", PROMETHEUS_RULES: None}


class RecordingHost:
    """A Host that records the scripts it is given (rendered for real: every parameter they
    declare must be passed) and answers as the monitoring host would."""
    name = "mon1"

    def __init__(self):
        self.scripts: list[str] = []
        self.uploads: list[str] = []

    def script(self, body: str, **_kwargs):
        from easycluster.remote import Result
        self.scripts.append(body.splitlines()[0])
        return Result(0, "/root/.easycluster-abc\n" if "staging.sh" in body.splitlines()[0] else "", "")

    def put_bytes(self, _data: bytes, path: str) -> None:
        self.uploads.append(path)


def test_the_monitoring_hosts_scripts_render_with_what_they_need():
    from easycluster import monitorctl
    from easycluster.progress import Progress
    host = RecordingHost()
    monitorctl.probe(host)
    i = inv()
    steps = monitor_plan(i, _facts(False, "inactive", "none"), targets(i))
    monitorctl.apply(host, [], steps, Progress(lambda _line: None))
    assert [s.split("/")[-1].split(".")[0] for s in host.scripts] == [
        "monitor_probe", "monitor_install", "staging", "configure", "monitor_apply"]
    assert len(host.uploads) == 3


REPLICATED = BASE % (", database: {type: postgresql, hosts: [db1, db2, db3]}, "
                     "monitoring: {host: mon1, address: 10.0.0.9}")


def test_the_database_hosts_get_node_exporter_and_are_scraped():
    i = inv(REPLICATED)
    config = yaml.safe_load({f.path: f.content for f in monitor_files(i, targets(i), database_targets(i))}[
        PROMETHEUS_CONFIG])
    jobs = {j["job_name"]: j["static_configs"] for j in config["scrape_configs"]}
    assert [(c["targets"], c["labels"]) for c in jobs["easycluster-database"]] == [
        ([f"db{n}:9100"], {"host": f"db{n}"}) for n in (1, 2, 3)]
    mon = MonitorFacts(packages={p: True for p in MONITOR_PACKAGES}, units={u: "active" for u in MONITOR_UNITS},
                       files={f.path: f.content for f in monitor_files(i, targets(i), database_targets(i))})
    mon.files[PROMETHEUS_CONFIG] = None
    bare = MonitorFacts(packages={"prometheus-node-exporter": False}, units={}, files={NODE_EXPORTER_DEFAULT: None})

    def running(host: str, state: str) -> MonitorFacts:
        return MonitorFacts(packages={"prometheus-node-exporter": True}, units={"prometheus-node-exporter": state},
                            files={NODE_EXPORTER_DEFAULT: exporter_files(i, host)[0].content})
    ready, stopped = running("db2", "active"), running("db3", "failed")
    steps = monitor_plan(i, {"mon1": mon, "db1": bare, "db2": ready, "db3": stopped}, targets(i))
    assert [(s.host, s.action) for s in steps] == [("mon1", WRITE), ("mon1", APPLY), ("db1", INSTALL),
                                                   ("db1", WRITE), ("db3", EXPORTER)]
    host = RecordingHost()
    db = RecordingHost()
    db.name = "db1"
    monitorctl_apply_db = [s for s in steps if s.host == "db1"]
    from easycluster import monitorctl
    from easycluster.progress import Progress
    monitorctl.apply(host, [db], monitorctl_apply_db, Progress(lambda _line: None))
    assert [s.split("/")[-1].split(".")[0] for s in db.scripts] == ["monitor_install", "staging", "configure"]
    # the database members' firewall: node-exporter for the monitoring host only
    from easycluster.render import Member, replica_files
    rules = next(f.content for f in replica_files(i, Member("db1", "10.0.0.21"), [Member("db1", "10.0.0.21")], [],
                                                  Secret("r"), "17") if f.path.endswith(".nft"))
    assert f"tcp dport {NODE_EXPORTER_PORT} ip saddr 10.0.0.9 accept" in rules
