"""cluster.monitoring on the session's lab: a real Prometheus and Alertmanager (Debian's) on a
host of their own, scraping real node-exporters, with easycluster's rules.

Runs after test_delivery on the session's cluster (whatever hosts its inventory holds by then):
one more host is brought up as the monitoring host and `fab deploy` runs with cluster.monitoring
(alert_after 15 s, a 5 s scrape: short bounds for a test; the defaults are 60 s and 15 s). Then:
every target up; the plugin's metrics valid for promtool and right about the cluster; node-exporter
closed to everyone but the monitoring host; a powered-off node's host fires an alert naming it
within two minutes, which clears after its boot; a partition fires the partition alert, which
`fab heal` clears.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

import conftest
from easycluster.paths import ALERTMANAGER_PORT, METRICS_DIR, NODE_EXPORTER_PORT, PROMETHEUS_PORT

ALERT_AFTER, SCRAPE = 15, 5
FIRES_WITHIN = 120      # the bound: a powered-off host's alert, named, within two minutes


@pytest.fixture(scope="module")
def watched(lab):
    """(inventory path, the monitoring host, the nodes' hosts): the session's cluster, watched."""
    before = lab.inventory.read_text()
    data = yaml.safe_load(before)
    nodes = [n["host"] for n in data["nodes"]]
    monitor = f"lab{max(int(h[3:]) for h in lab.hosts()) + 1}"
    lab.up(int(monitor[3:]))                  # one more host: the monitoring host (the others untouched)
    lab.inventory.write_text(before)          # (up lists every host as a node: not this one)
    data["cluster"]["monitoring"] = {"host": monitor, "address": lab.ip(monitor), "alert_after": ALERT_AFTER,
                                     "scrape_interval": SCRAPE}
    path = lab.dir / "monitored.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path, monitor, nodes


def fab(path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return conftest.fab(*args, "--inventory", str(path), check=check)


def api(lab, host: str, port: int, query: str) -> dict | list:
    with urllib.request.urlopen(f"http://{lab.ip(host)}:{port}{query}", timeout=10) as r:
        return json.load(r)


def prom(lab, monitor: str, expr: str) -> list[dict]:
    return api(lab, monitor, PROMETHEUS_PORT, "/api/v1/query?query=" + urllib.parse.quote(expr))["data"]["result"]


def firing(lab, monitor: str) -> list[dict]:
    return [a for a in api(lab, monitor, PROMETHEUS_PORT, "/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]


def until(check, bound: float, what: str):
    deadline = time.monotonic() + bound
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not {what} within {bound:.0f}s"
        time.sleep(2)


def test_deploy_sets_up_prometheus_and_every_target_is_up(lab, watched):
    path, monitor, nodes = watched
    out = fab(path, "deploy").stdout
    assert f"[{monitor}] install prometheus, prometheus-alertmanager, prometheus-node-exporter" in out, out
    assert "cluster: healthy" in out or "healthy)" in out
    again = fab(path, "deploy").stdout
    assert "no changes" in again and f"[{monitor}]" not in again, again   # idempotent, monitoring too
    targets = [f"{n}:{NODE_EXPORTER_PORT}" for n in nodes] + [f"localhost:{p}" for p in
                                                              (NODE_EXPORTER_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT)]

    def all_up():
        up = {r["metric"]["instance"]: r["value"][1] for r in prom(lab, monitor, "up")}
        return up if sorted(up) == sorted(targets) and set(up.values()) == {"1"} else None
    until(all_up, 60, "every target up")
    # Alertmanager answers, and no alert fires on a healthy cluster
    assert api(lab, monitor, ALERTMANAGER_PORT, "/api/v2/status")["cluster"]["status"] in ("ready", "settling", "disabled")
    assert firing(lab, monitor) == [], firing(lab, monitor)


def test_the_plugins_metrics_are_valid_and_tell_the_cluster_as_it_is(lab, watched):
    path, monitor, nodes = watched
    text = conftest.ssh(lab, nodes[0], f"cat {METRICS_DIR}/easycluster.prom").stdout
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    masters = [n for n in yaml.safe_load(path.read_text())["nodes"] if n.get("role", "master") == "master"]
    by_node = {r["metric"]["host"]: float(r["value"][1]) for r in prom(lab, monitor, "easycluster_running_db_nodes")}
    assert by_node == {n: float(len(nodes)) for n in nodes}, by_node
    assert {r["metric"]["host"] for r in prom(lab, monitor, "easycluster_master == 1")} == {m["host"] for m in masters}
    assert prom(lab, monitor, "easycluster_missing_tables{role='master'} > 0") == []
    assert prom(lab, monitor, "easycluster_partitioned == 1") == []
    info = prom(lab, monitor, "easycluster_node_info")
    assert {r["metric"]["os"] for r in info} == {"Debian 13"} and len(info) == len(nodes)
    stored = prom(lab, monitor, 'easycluster_table_bytes{table="passwd"}')
    assert stored and all(float(r["value"][1]) > 0 for r in stored)
    assert prom(lab, monitor, 'node_systemd_unit_state{name="ejabberd.service", state="active"} == 1')


def test_node_exporter_answers_the_monitoring_host_only(lab, watched):
    _, monitor, nodes = watched

    def reaches(src: str, dst: str) -> bool:
        r = lab.exec(src, f"timeout 5 bash -c 'exec 3<>/dev/tcp/{lab.ip(dst)}/{NODE_EXPORTER_PORT}'", check=False)
        return r.returncode == 0
    assert reaches(monitor, nodes[0])
    assert not reaches(nodes[1], nodes[0])


def test_a_powered_off_host_fires_an_alert_naming_it_and_it_clears_after_boot(lab, watched):
    path, monitor, nodes = watched
    victim = nodes[-1]
    t0 = time.monotonic()
    conftest.fab("lab.poweroff", "--host", victim)
    try:
        alert = until(lambda: [a for a in firing(lab, monitor) if a["labels"]["alertname"] == "EasyclusterNodeDown"
                               and a["labels"].get("host") == victim], FIRES_WITHIN, f"{victim}'s alert firing")
        fired_after = time.monotonic() - t0
        assert "does not answer" in alert[0]["annotations"]["summary"] and victim in alert[0]["annotations"]["summary"]
        # Alertmanager has it too, to send to the receivers
        sent = api(lab, monitor, ALERTMANAGER_PORT, "/api/v2/alerts")
        assert any(a["labels"].get("alertname") == "EasyclusterNodeDown" and a["labels"].get("host") == victim
                   for a in sent)
    finally:
        conftest.fab("lab.boot", "--host", victim)
    print(f"\n{victim} powered off: EasyclusterNodeDown firing after {fired_after:.0f} s")
    until(lambda: not [a for a in firing(lab, monitor) if a["labels"].get("host") == victim
                       or a["labels"].get("peer", "").endswith(f"@{victim}")], 180, f"{victim}'s alerts cleared")
    fab(path, "status")


def test_a_partition_fires_its_alert_and_the_heal_clears_it(lab, watched):
    path, monitor, nodes = watched
    cut, winner = nodes[-1], nodes[0]
    conftest.fab("lab.partition", "--host", cut)
    try:
        until(lambda: f"ejabberd@{cut}" not in conftest.ssh(lab, winner, "ejabberdctl list_cluster").stdout, 100,
              "the partition noticed")
    finally:
        conftest.fab("lab.heal-link", "--host", cut)
    conftest.node_eval(lab, winner, f"net_adm:ping('ejabberd@{cut}')")   # the nodes meet again: Mnesia reports it
    try:
        until(lambda: [a for a in firing(lab, monitor) if a["labels"]["alertname"] == "EasyclusterPartition"],
              FIRES_WITHIN, "the partition alert firing")
    finally:
        fab(path, "heal", "--winner", winner)
    until(lambda: not [a for a in firing(lab, monitor) if a["labels"]["alertname"] in
                       ("EasyclusterPartition", "EasyclusterPeerNotRunning")], 120, "the partition alert cleared")
