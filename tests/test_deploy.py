"""`fab deploy` on a fresh 3-host lab: real ejabberd, real mnesia, real XMPP clients.

The tests run in order and share one cluster: plan on fresh hosts, deploy,
check it, re-deploy (no changes), then change the inventory.
"""

from __future__ import annotations

import json
import re
import shlex
import stat
import subprocess
import time
import uuid

import pytest
import yaml

import xmpp
from conftest import JOIN_PAUSE, assert_units_clean, fab, fab_paused_in_join, pinned_version, ssh, unit_state
from easycluster.facts import parse_facts
from easycluster.inventory import load_inventory
from easycluster.paths import MNESIA_BACKUP_DIR
from easycluster.probe import probe_script
from easycluster.scripts import render

HOSTS = ["lab1", "lab2", "lab3"]
NODES = [f"ejabberd@{h}" for h in HOSTS]


def cluster_status(lab, host: str) -> dict:
    return json.loads(ssh(lab, host, "ejabberdctl easy_cluster_status").stdout)


def status_json(tables: bool = False) -> tuple[int, dict]:
    proc = fab("status", "--json", *(["--tables"] if tables else []), check=False)
    return proc.returncode, json.loads(proc.stdout)


def managed_checksums(lab) -> dict[str, str]:
    return {h: ssh(lab, h, "sha256sum /etc/ejabberd/ejabberd.yml /etc/default/ejabberd "
                           "/var/lib/ejabberd/.erlang.cookie").stdout for h in HOSTS}


def started_at(lab) -> dict[str, int]:
    return {h: cluster_status(lab, h)["started_at"] for h in HOSTS}


@pytest.fixture(scope="module")
def deployed(lab):
    """The plan on fresh hosts (must change nothing); a first deploy whose first joining node
    dies mid-join (what it left is recorded in `failed_deploy`); then the real deploy."""
    SINCE.append(time.time())
    dry = fab("deploy", "--dry")
    for host in HOSTS:
        assert ssh(lab, host, "dpkg -s ejabberd", check=False).returncode != 0, "--dry installed ejabberd"
    assert not lab.cookie_file.exists(), "--dry created the cookie file"
    proc = fab_paused_in_join(lab, "lab2", "deploy")
    ssh(lab, "lab2", f"pkill -9 -u ejabberd -f beam; rm -f {JOIN_PAUSE}")
    out, _ = proc.communicate(timeout=300)
    FAILED_DEPLOY.update(returncode=proc.returncode, output=out, db_nodes=cluster_status(lab, "lab1")["db_nodes"],
                         left={h: ssh(lab, h, "pgrep -u ejabberd -f beam >/dev/null && echo VM; ls -A /var/lib/ejabberd; "
                                      "ls /var/lib/easycluster/joining /etc/ejabberd/easycluster-join-seed 2>/dev/null",
                                      check=False).stdout for h in HOSTS[1:]})
    # longer than the unit's RestartSec (5 s): a node killed outside systemctl would be back by now
    time.sleep(8)
    FAILED_DEPLOY.update(later={h: (unit_state(lab, h), ssh(lab, h, "pgrep -u ejabberd -f beam >/dev/null && echo VM; "
                                                                 "ls -A /var/lib/ejabberd", check=False).stdout)
                                for h in HOSTS[1:]})
    SINCE.append(time.time())
    result = fab("deploy", timeout=900)
    yield dry.stdout, result.stdout
    # later modules start from the lab's own inventory again
    fab("deploy", timeout=600)


FAILED_DEPLOY: dict = {}
SINCE: list[float] = []     # when the module began, when the real deploy began


def test_a_first_deploy_whose_joining_node_dies_is_rolled_back_and_the_waiting_one_stopped(deployed):
    out = FAILED_DEPLOY["output"]
    assert FAILED_DEPLOY["returncode"] == 1, out
    assert "no Mnesia backup: the cluster is new" in out, out
    # the plugin is compiled once, on lab1; lab2 and lab3 (same packages) install that beam
    for host in ("lab2", "lab3"):
        assert f"[{host}]   plugin: the beam compiled on lab1 (same packages)" in out, out
    assert "join of ejabberd@lab2 to ejabberd@lab1 failed: the node died during its join" in out, out
    assert "rolled back: ejabberd@lab2 stopped and its Mnesia directory emptied" in out, out
    assert "[lab3] stopped: it was waiting for its turn to join (nothing had changed)" in out, out
    assert FAILED_DEPLOY["db_nodes"] == ["ejabberd@lab1"]
    # what easycluster's configure wrote into the Mnesia directory: the cookie and the storage
    # types (ejabberd.schema); the rolled-back node's directory is emptied of the second as well
    configured = ([".erlang.cookie"], [".erlang.cookie", "ejabberd.schema"])
    for host, left in FAILED_DEPLOY["left"].items():
        # no VM, no Mnesia data, no join marker, no first-start file
        assert sorted(left.split()) in configured, (host, left)
    for host, (unit, left) in FAILED_DEPLOY["later"].items():
        # stopped through the unit, disabled: systemd brought nothing back, no standalone schema
        assert unit == ("inactive", "disabled"), (host, unit)
        assert sorted(left.split()) in configured, (host, left)


def test_plan_on_fresh_hosts_lists_installs_files_and_joins_in_order(deployed, lab):
    dry, _ = deployed
    for host in HOSTS:
        assert f"[{host}] install ejabberd {pinned_version(lab)}" in dry
        assert f"[{host}] write /var/lib/ejabberd/.erlang.cookie" in dry
    assert "1. join ejabberd@lab2 to ejabberd@lab1 as master" in dry
    assert "2. join ejabberd@lab3 to ejabberd@lab1 as master" in dry
    assert "(content redacted)" in dry


def test_deploy_leaves_three_healthy_masters_with_every_table_everywhere(deployed, lab):
    _, out = deployed
    assert "cluster: 3 members, 3 masters (healthy)" in out
    rc, status = status_json(tables=True)
    assert rc == 0 and status["healthy"] is True and status["partitioned"] is False
    assert [n["name"] for n in status["nodes"]] == NODES
    for node in status["nodes"]:
        assert node["running"] and node["master"] and node["host"] in HOSTS
        assert node["db_nodes"] == NODES and node["running_db_nodes"] == NODES
    assert len(status["tables"]) > 20
    for table, holders in status["tables"].items():
        assert sorted(holders) == NODES, f"{table} lacks a copy: {holders}"
        assert len(set(holders.values())) == 1, f"{table}: storage types differ: {holders}"
    assert status["tables"]["passwd"]["ejabberd@lab3"] == "disc_only_copies"


def test_plugin_status_answers_on_every_node(deployed, lab):
    for host, name in zip(HOSTS, NODES):
        st = cluster_status(lab, host)
        assert st["node"] == name and st["master"] is True and st["missing_tables"] == []
        assert sorted(st["db_nodes"]) == NODES and sorted(st["running_db_nodes"]) == NODES


@pytest.mark.parametrize("args", [
    ["status"],
    ["easy_cluster_status"],                      # a plugin command's JSON
    ["nosuchcommand"],                            # ejabberd's own refusal, and its exit status
    ["check_account", "admin", "nosuchdomain.test"],
    ["help", "x\"y\\z'q,[1]"],                    # quotes, a backslash, Erlang's punctuation: as given
    ["help", "ejabberd@lab1,ejabberd@lab2"],       # a list of nodes, as easy_cluster_set_master takes it
    ["help", "é✓"],                                # not ASCII: through ejabberdctl
])
def test_ec_ctl_answers_as_ejabberdctl_does_without_a_vm_of_its_own(deployed, lab, args):
    """lib.sh's ec_ctl (every command the toolkit asks a node) prints and exits as `ejabberdctl`
    does, without booting an Erlang VM to ask (erl_call: here an `ejabberdctl` that answers is
    a shell function that fails, unless the argument is not ASCII)."""
    by_hand = ssh(lab, "lab1", "cd / && ejabberdctl " + shlex.join(args), check=False)
    fallback = not args[-1].isascii()
    poisoned = "" if fallback else "ejabberdctl() { echo 'booted a VM'; return 99; }\n"
    text = poisoned + render("ctl", command=args[0], args=args[1:], no_timeout=False)
    ours = subprocess.run(["ssh", "-F", str(lab.ssh_config), "lab1", "bash -c 'eval \"$(cat)\"'"], input=text,
                          capture_output=True, text=True, timeout=120)
    if args == ["easy_cluster_status"]:   # its uptime and counters move between the two calls
        keep = ("node", "db_nodes", "running_db_nodes", "master", "missing_tables", "plugin_version")
        assert {k: json.loads(ours.stdout)[k] for k in keep} == {k: json.loads(by_hand.stdout)[k] for k in keep}
    else:
        assert ours.stdout == by_hand.stdout
    assert ours.returncode == by_hand.returncode, ours.stderr
    assert "booted a VM" not in ours.stdout


def test_the_fact_probe_tells_open_refused_and_dropped_ports_apart(deployed, lab):
    """probe.sh tries every peer's epmd port and distribution window at once, without a process
    per try: a port that answers is open, one nobody listens on refused, one a firewall drops
    (no answer within probe.PROBE_SECONDS) timeout; and nothing of the probe is left running."""
    dist = int(ssh(lab, "lab2", "ss -Hltnp | grep beam.smp | grep -o ':43[7-8][0-9] ' | head -n1").stdout.strip(" :\n"))
    window = load_inventory(lab.inventory).cluster
    free = [p for p in range(window.port_min, window.port_max + 1) if p != dist]
    dropped, refused = free[-1], free[0]
    ssh(lab, "lab1", "nft add table inet zz_probe_test && "
                     "nft add chain inet zz_probe_test out '{ type filter hook output priority 0; }' && "
                     f"nft add rule inet zz_probe_test out ip daddr {lab.ip('lab2')} tcp dport {dropped} drop")
    try:
        text = probe_script(load_inventory(lab.inventory), "lab1")
        out = subprocess.run(["ssh", "-F", str(lab.ssh_config), "lab1", "bash -c 'eval \"$(cat)\"'"], input=text,
                             capture_output=True, text=True, timeout=60)
    finally:
        ssh(lab, "lab1", "nft delete table inet zz_probe_test")
    reach = parse_facts("lab1", out.stdout).reach
    assert (reach[("lab2", 4369)], reach[("lab2", dist)], reach[("lab3", 4369)]) == ("open", "open", "open"), reach
    assert reach[("lab2", refused)] == "refused" and reach[("lab2", dropped)] == "timeout", reach
    assert len(reach) == 2 * (1 + len(free) + 1), reach   # lab2's and lab3's: epmd and the window
    left = ssh(lab, "lab1", "pgrep -af 'sleep|dev/tcp' | grep -v pgrep", check=False).stdout
    assert left == "", left


def test_cookie_is_a_0600_local_secret_and_0400_on_hosts(deployed, lab):
    assert stat.S_IMODE(lab.cookie_file.stat().st_mode) == 0o600
    cookie = lab.cookie_file.read_text().strip()
    assert len(cookie) >= 32
    for host in HOSTS:
        assert ssh(lab, host, "stat -c '%a %U' /var/lib/ejabberd/.erlang.cookie").stdout.split() == ["400", "ejabberd"]
    for out in deployed:
        assert cookie not in out


def test_users_registered_on_one_node_log_in_and_talk_across_nodes(deployed, lab):
    domain = f"{lab.name}.test"
    tag = uuid.uuid4().hex[:8]
    alice, bob = (f"alice{tag}@{domain}", "pw-a"), (f"bob{tag}@{domain}", "pw-b")
    xmpp.register(lab.ip("lab2"), *alice)
    xmpp.register(lab.ip("lab3"), *bob)
    assert xmpp.can_login(lab.ip("lab1"), *alice), "a user registered via lab2 cannot log in on lab1"
    assert not xmpp.can_login(lab.ip("lab1"), alice[0], "wrong password")
    latency = xmpp.send_and_receive((lab.ip("lab1"), *alice), (lab.ip("lab3"), *bob), f"hello {tag}")
    assert latency < 10


def test_a_second_deploy_changes_nothing_and_restarts_nothing(deployed, lab):
    before = managed_checksums(lab), started_at(lab)
    out = fab("deploy").stdout
    assert "no changes" in out
    assert "join" not in out.lower().replace("joins", "")
    assert (managed_checksums(lab), started_at(lab)) == before


def test_every_changing_command_with_dry_says_what_it_would_do_and_changes_nothing(deployed, lab):
    """--dry on each command that changes the cluster: its rules are checked (a refusal is still a
    refusal), what it would do is printed, and nothing on any host changes: no node restarted,
    no file written, no lock left, no backup taken."""
    def backups() -> str:
        return ssh(lab, "lab1", f"ls {MNESIA_BACKUP_DIR} 2>/dev/null | wc -l").stdout.strip()
    before = managed_checksums(lab), started_at(lab), backups()
    would = {
        ("rolling-restart", "--dry"): "would restart, one at a time",
        ("stop-cluster", "--dry"): "would stop, one at a time, in this order: ejabberd@lab3, ejabberd@lab2, "
                                   "ejabberd@lab1",
        ("start-cluster", "--dry"): "would start at once: (none)",
        ("remove-node", "--host", "lab3", "--dry"): "would back up on lab1, drain ejabberd@lab3",
        ("heal", "--dry"): "nothing to heal",
        ("rotate-cookie", "--dry"): "would give lab1, lab2, lab3 the new cookie",
        ("upgrade", "--dry"): "dry run: nothing was changed",
        ("deploy", "--dry"): "dry run: nothing was changed",
    }
    for args, expected in would.items():
        out = fab(*args).stdout
        assert expected in out, f"fab {' '.join(args)}:\n{out}"
        assert "dry run: nothing was changed" in out or args[0] == "heal", out
    refused = {   # the rules hold with --dry too
        ("forget-node", "--host", "lab3", "--dry"): "is running",
        ("add-master", "--host", "lab3", "--dry"): "already a member of the cluster",
    }
    for args, expected in refused.items():
        proc = fab(*args, check=False)
        assert proc.returncode == 1 and expected in proc.stderr, f"fab {' '.join(args)}: {proc.stderr}"
    assert (managed_checksums(lab), started_at(lab), backups()) == before
    assert not lab.cookie_file.with_name(lab.cookie_file.name + ".new").exists(), \
        "rotate-cookie --dry left a pending cookie file"
    assert "no lock held" in fab("break-lock").stdout


def _edit_inventory(lab, **cluster):
    data = yaml.safe_load(lab.inventory.read_text())
    data["cluster"].update(cluster)
    path = lab.dir / "inventory-changed.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_changed_variable_is_shown_by_dry_then_applied_without_restart(deployed, lab):
    inventory = _edit_inventory(lab, loglevel="warning")
    before_sums, before_start = managed_checksums(lab), started_at(lab)
    dry = fab("deploy", "--dry", "--inventory", str(inventory)).stdout
    changed = [l for l in dry.splitlines() if re.match(r"^\[lab\d\]   [+-](?![+-])", l)]
    assert changed == [f"[{h}]   {sign}loglevel: {lvl}" for h in HOSTS
                       for sign, lvl in (("-", "info"), ("+", "warning"))], dry
    assert all(f"reload ejabberd@{h}'s ejabberd.yml (no restart)" in dry for h in HOSTS), dry
    assert not re.search(r"\] restart ", dry), "a reloadable change planned a restart"
    assert managed_checksums(lab) == before_sums, "--dry changed a file"

    out = fab("deploy", "--inventory", str(inventory)).stdout
    assert all(f"[{h}] reload ejabberd.yml: ok" in out for h in HOSTS)
    after = managed_checksums(lab)
    for h in HOSTS:
        old, new = before_sums[h].splitlines(), after[h].splitlines()
        assert old[0] != new[0] and old[1:] == new[1:], "only ejabberd.yml may change"
        assert "loglevel: warning" in ssh(lab, h, "cat /etc/ejabberd/ejabberd.yml").stdout
    assert started_at(lab) == before_start, "a node restarted for a reloadable change"
    assert fab("status").returncode == 0


def test_a_distribution_change_restarts_nodes_one_at_a_time_and_keeps_the_cluster(deployed, lab):
    inventory = _edit_inventory(lab, loglevel="warning", distribution={"port_min": 4380, "port_max": 4389})
    before = started_at(lab)
    out = fab("deploy", "--inventory", str(inventory), timeout=600).stdout
    restarts = [l for l in out.splitlines() if re.match(r"^\[lab\d\] restart: ok", l)]
    assert len(restarts) == 3
    # one at a time: each node is back in the cluster before the next restarts
    order = [l[:6] for l in out.splitlines() if "restart: ok" in l or "back in the cluster" in l]
    assert order == ["[lab1]", "[lab1]", "[lab2]", "[lab2]", "[lab3]", "[lab3]"], order
    after = started_at(lab)
    assert all(after[h] > before[h] for h in HOSTS)
    rc, status = status_json()
    assert rc == 0 and status["healthy"]
    for h in HOSTS:
        assert "FIREWALL_WINDOW=4380-4389" in ssh(lab, h, "cat /etc/default/ejabberd").stdout
        backups = ssh(lab, h, "ls /var/backups/easycluster/").stdout
        assert "etc_default_ejabberd." in backups and "etc_ejabberd_ejabberd.yml." in backups


def test_every_node_runs_under_its_unit_with_easyclusters_drop_in(deployed, lab):
    for host in HOSTS:
        show = dict(line.split("=", 1) for line in ssh(lab, host, (
            "systemctl show ejabberd -p WatchdogUSec -p TimeoutStopUSec -p RestartPreventExitStatus "
            "-p DropInPaths -p MainPID -p UnitFileState")).stdout.splitlines())
        assert show["WatchdogUSec"] == "0" and show["TimeoutStopUSec"] == "2min", show
        assert show["RestartPreventExitStatus"] == "78" and show["UnitFileState"] == "enabled", show
        assert "/etc/systemd/system/ejabberd.service.d/easycluster.conf" in show["DropInPaths"], show
        # the node's VM is in the unit's cgroup: started by systemd, not beside it
        cgroup = ssh(lab, host, "cat /proc/$(pgrep -o -u ejabberd -f beam)/cgroup").stdout
        assert "ejabberd.service" in cgroup, cgroup
    # across the failed deploy, the deploy and everything since: no restart, kill or watchdog
    assert_units_clean(lab, HOSTS, SINCE[1])


def test_epmd_listens_on_the_cluster_address_and_loopback_only(deployed, lab):
    for host in HOSTS:
        listening = ssh(lab, host, "ss -Hltn 'sport = :4369' | awk '{print $4}' | sort").stdout.split()
        assert listening == sorted(["127.0.0.1:4369", f"{lab.ip(host)}:4369"]), (host, listening)
        # the node is registered with it (epmd was restarted before the node started, not after)
        assert "name ejabberd at port" in ssh(lab, host, "epmd -names").stdout, host


def test_a_configuration_that_does_not_start_is_rolled_back_with_the_plugin_it_replaced(deployed, lab):
    """lab1's new distribution window is taken by another program, so its node cannot start
    with the new configuration; the deploy also replaces lab1's plugin (its installed sources
    were edited, as by hand). Both come back as they were: the files and the whole plugin
    directory, from the backups configure took, and the node runs again."""
    previous = lab.dir / "inventory-changed.yml"          # the running configuration (window 4380-4389)
    assert "port_min: 4380" in previous.read_text()
    data = yaml.safe_load(previous.read_text())
    data["cluster"]["distribution"].update(port_min=4390, port_max=4391)
    broken = lab.dir / "inventory-window-taken.yml"
    broken.write_text(yaml.safe_dump(data))
    src = "/usr/local/lib/easy_cluster/src/easy_cluster.erl"
    ssh(lab, "lab1", f"echo '%% edited by hand' >> {src}; systemd-run --quiet --unit=ec-test-blocker "
                     "systemd-socket-activate -l 4390 -l 4391 /bin/sleep infinity")
    try:
        before = managed_checksums(lab)["lab1"]
        proc = fab("deploy", "--inventory", str(broken), check=False, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, out
        assert "[lab1] restore the previous configuration and start: ok" in out, out
        assert "the previous configuration was restored and the node runs it" in out, out
        assert "[lab2] restart: " not in out, "the deploy went on after the first failed restart"
        assert managed_checksums(lab)["lab1"] == before
        assert "FIREWALL_WINDOW=4380-4389" in ssh(lab, "lab1", "cat /etc/default/ejabberd").stdout
        # put back with the owner and mode they were installed with, not the backups' (root, 0600)
        modes = ssh(lab, "lab1", "stat -c '%a %U %n' /etc/default/ejabberd /etc/ejabberd/ejabberd.yml").stdout
        assert modes.split("\n")[:2] == ["644 root /etc/default/ejabberd", "600 ejabberd /etc/ejabberd/ejabberd.yml"], modes
        # the plugin directory as it was: the hand-edited sources, and beams that match them
        assert ssh(lab, "lab1", f"tail -n1 {src}").stdout.strip() == "%% edited by hand"
        backups = ssh(lab, "lab1", "ls /var/backups/easycluster/").stdout
        assert "usr_local_lib_easy_cluster." in backups and ".tar" in backups, backups
        assert set(cluster_status(lab, "lab1")["running_db_nodes"]) == set(NODES)
    finally:
        ssh(lab, "lab1", "systemctl stop ec-test-blocker", check=False)
    # the running configuration again, with the package's plugin: everything healthy
    fab("deploy", "--inventory", str(previous), timeout=600)
    assert "%% edited by hand" not in ssh(lab, "lab1", f"cat {src}").stdout
    rc, status = status_json()
    assert rc == 0 and status["healthy"], status
