"""Membership changes on a live cluster with users and roster data: add-master, remove-node,
forget-node, failed-join rollback, the cluster lock. Runs after test_deploy on the same lab.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml

import xmpp
from conftest import JOIN_PAUSE, JOIN_PROGRESS, assert_units_clean, fab, fab_paused_in_join, node_eval, ssh, unit_state
from easycluster.paths import BACKUP_PAUSE, MNESIA_BACKUP_DIR

USERS = [f"user{i}" for i in range(8)]
PASSWORD = "s3cret-pw"
PAUSE = JOIN_PAUSE


def domain(lab) -> str:
    return f"{lab.name}.test"


def status() -> tuple[int, dict]:
    proc = fab("status", "--json", "--tables", check=False)
    return proc.returncode, json.loads(proc.stdout)


def node_status(lab, host: str) -> dict:
    return json.loads(ssh(lab, host, "ejabberdctl easy_cluster_status").stdout)


def members(st: dict) -> list[str]:
    return sorted(n["name"] for n in st["nodes"] if n["member"])


def assert_healthy_with(expected_hosts: list[str], users: int, lab) -> dict:
    rc, st = status()
    assert rc == 0 and st["healthy"], st["problems"]
    assert members(st) == sorted(f"ejabberd@{h}" for h in expected_hosts)
    assert all(n["master"] for n in st["nodes"])
    for h in expected_hosts:
        assert node_status(lab, h)["registered_users"] == users
    return st


@pytest.fixture(scope="module")
def cluster(lab):
    """The deployed 3-node cluster, with users and roster items, and a 4th fresh host."""
    fab("deploy", timeout=600)
    d = domain(lab)
    script = "; ".join(f"ejabberdctl register {u} {d} {PASSWORD}" for u in USERS)
    script += "; " + "; ".join(f"ejabberdctl add_rosteritem {USERS[0]} {d} {u} {d} {u} friends both"
                               for u in USERS[1:4])
    ssh(lab, "lab1", script)
    time.sleep(3)   # a write followed at once by a kill can be lost (disc log dump)
    fab("lab.up", "--nodes", "4", timeout=300)
    users = node_status(lab, "lab1")["registered_users"]   # ours, and those earlier modules made
    assert users >= len(USERS)
    return users


def start_paused_add_master(lab, host: str) -> subprocess.Popen:
    """`fab add-master` in the background, held (fault injection) just before the tables copy."""
    return fab_paused_in_join(lab, host, "add-master", "--host", host)


def test_a_host_outside_the_cluster_is_refused_by_epmd_and_the_distribution(cluster, lab):
    """lab4 is up, but no member yet."""
    dist_port = ssh(lab, "lab1", "ss -Hltnp | grep beam.smp | grep -o ':43[7-8][0-9] ' | head -n1").stdout.strip(" :\n")
    assert dist_port, "no distribution port found on lab1"
    for port in ("4369", dist_port):
        assert connects(lab, "lab4", "lab1", port) == "refused", port
        assert connects(lab, "lab2", "lab1", port) == "open", port


def test_add_master_joins_a_fourth_master_with_all_data_and_restarts_no_one(cluster, lab):
    before = {h: node_status(lab, h)["started_at"] for h in ("lab1", "lab2", "lab3")}
    out = fab("add-master", "--host", "lab4", timeout=600).stdout
    assert f"Mnesia backup: {MNESIA_BACKUP_DIR}/" in out
    # the plugin: a member's installed beams (same packages), not compiled on lab4
    assert "[lab4]   plugin: the beams installed on lab1 (same packages)" in out, out
    assert "cluster: 4 members, 4 masters (healthy)" in out
    st = assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)
    for table, holders in st["tables"].items():
        assert "ejabberd@lab4" in holders, f"lab4 holds no copy of {table}"
    assert {h: node_status(lab, h)["started_at"] for h in before} == before, "a member restarted"
    lab4 = lab.ip("lab4")
    for user in USERS:
        assert xmpp.can_login(lab4, f"{user}@{domain(lab)}", PASSWORD), f"{user} cannot log in via lab4"
    roster = ssh(lab, "lab4", f"ejabberdctl get_roster {USERS[0]} {domain(lab)}").stdout
    assert all(f"{u}@{domain(lab)}" in roster for u in USERS[1:4]), roster


def test_refusals_change_nothing(cluster, lab, tmp_path):
    again = fab("add-master", "--host", "lab4", check=False)
    assert again.returncode == 1 and "already a member" in again.stderr
    stranger = fab("add-master", "--host", "lab9", check=False)
    assert stranger.returncode == 1 and "'lab9' is not a node of" in stranger.stderr
    running = fab("forget-node", "--host", "lab2", check=False)
    assert running.returncode == 1 and "it is running" in running.stderr
    # an inventory where lab1 is the only node: removing it would remove the last master
    data = yaml.safe_load(lab.inventory.read_text())
    data["nodes"] = [n for n in data["nodes"] if n["host"] == "lab1"]
    single = tmp_path / "single.yml"
    single.write_text(yaml.safe_dump(data))
    last = fab("remove-node", "--host", "lab1", "--inventory", str(single), check=False)
    assert last.returncode == 1 and "only running master" in last.stderr, last.stderr
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)


def test_remove_node_drains_wipes_and_the_node_can_be_added_again(cluster, lab):
    out = fab("remove-node", "--host", "lab4", "--drain", "1", timeout=300).stdout
    assert "[cluster] 3 members, 3 masters (healthy)" in out
    rc, st = status()
    assert rc == 0 and "ejabberd@lab4" in st["departed"], st
    assert ssh(lab, "lab4", "ls -A /var/lib/ejabberd").stdout.split() == [".erlang.cookie"]
    assert ssh(lab, "lab4", "pgrep -u ejabberd -f beam", check=False).returncode != 0, "lab4 still runs"
    assert_healthy_with(["lab1", "lab2", "lab3"], cluster, lab)
    fab("add-master", "--host", "lab4", timeout=600)
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)


def storage_of(lab, host: str) -> str:
    """The storage type of the node's copies of every users' table ejabberd made here, when it
    is one type for all (else the mixture, printed)."""
    from easycluster.inventory import USER_TABLES
    tables = ", ".join(USER_TABLES)
    return node_eval(lab, host, f"lists:usort([mnesia:table_info(T, storage_type) || T <- [{tables}], "
                                "lists:member(T, mnesia:system_info(tables))])").strip("[] \n")


def test_cluster_storage_moves_every_masters_user_tables_and_a_join_copies_them_as_held(cluster, lab, tmp_path):
    """cluster.storage: disc_copies: `fab deploy` restarts the masters one at a time, each
    converting its copies as it starts; a master added then gets them as the cluster holds them;
    back to ejabberd's default the same way. No user lost, logins and rosters as before."""
    hosts = ["lab1", "lab2", "lab3", "lab4"]
    data = yaml.safe_load(lab.inventory.read_text())
    data["cluster"]["storage"] = "disc_copies"
    memory = tmp_path / "memory.yml"
    memory.write_text(yaml.safe_dump(data))
    out = fab("deploy", "--inventory", str(memory), timeout=600).stdout
    assert "write /var/lib/ejabberd/ejabberd.schema" in out and "cluster: 4 members, 4 masters (healthy)" in out, out
    assert {h: storage_of(lab, h) for h in hosts} == {h: "disc_copies" for h in hosts}
    fab("remove-node", "--host", "lab4", "--drain", "0", "--inventory", str(memory), timeout=300)
    fab("add-master", "--host", "lab4", "--inventory", str(memory), timeout=600)
    assert storage_of(lab, "lab4") == "disc_copies"
    assert_healthy_with(hosts, cluster, lab)
    for user in USERS[:2]:
        assert xmpp.can_login(lab.ip("lab4"), f"{user}@{domain(lab)}", PASSWORD), user
    fab("deploy", timeout=600)   # the lab's inventory: ejabberd's default again
    assert {h: storage_of(lab, h) for h in hosts} == {h: "disc_only_copies" for h in hosts}
    assert_healthy_with(hosts, cluster, lab)
    roster = ssh(lab, "lab2", f"ejabberdctl get_roster {USERS[0]} {domain(lab)}").stdout
    assert all(f"{u}@{domain(lab)}" in roster for u in USERS[1:4]), roster


def test_a_join_whose_node_is_killed_is_rolled_back_and_a_rerun_succeeds(cluster, lab):
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    proc = start_paused_add_master(lab, "lab4")
    ssh(lab, "lab4", f"pkill -9 -u ejabberd -f beam; rm -f {PAUSE}")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert "join of ejabberd@lab4 to ejabberd@lab1 failed" in out and "rolled back:" in out, out
    assert "removed from the schema" in out, out
    assert_healthy_with(["lab1", "lab2", "lab3"], cluster, lab)
    assert ssh(lab, "lab4", "ls -A /var/lib/ejabberd").stdout.split() == [".erlang.cookie"]
    fab("add-master", "--host", "lab4", timeout=600)
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)


def test_a_join_cut_off_by_the_network_is_rolled_back_and_a_rerun_succeeds(cluster, lab):
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    proc = start_paused_add_master(lab, "lab4")
    fab("lab.partition", "--host", "lab4")
    try:
        out, _ = proc.communicate(timeout=400)
    finally:
        fab("lab.heal-link", "--host", "lab4")
    assert proc.returncode == 1, out
    assert "lost contact with the host during the join" in out, out
    assert "removed from the schema" in out and "the next add-master/deploy stops and wipes it" in out, out
    ssh(lab, "lab4", f"rm -f {PAUSE}")
    assert_healthy_with(["lab1", "lab2", "lab3"], cluster, lab)
    # the cut-off host kept its piece of the lock; the next run names it as stale
    refused = fab("add-master", "--host", "lab4", check=False)
    assert refused.returncode == 1 and "the lock is stale" in refused.stderr, refused.stderr
    broken = fab("break-lock").stdout
    assert "[lab4] removed: the cluster is locked by" in broken, broken
    out = fab("add-master", "--host", "lab4", timeout=600).stdout
    assert "an earlier join of ejabberd@lab4" in out, out
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)


def test_a_join_whose_toolkit_died_is_rolled_back_by_the_next_run(cluster, lab):
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    proc = start_paused_add_master(lab, "lab4")
    proc.kill()             # the toolkit dies mid-join: no rollback, its lock and marker stay behind
    proc.communicate(timeout=30)
    # ...and the half-joined node dies too, and stays down: its unit stopped, or systemd would
    # start it again (RestartSec), and it would finish the join at boot before or during the next
    # run, which then keeps that join instead of rolling it back
    ssh(lab, "lab4", f"systemctl kill -s KILL ejabberd; systemctl stop ejabberd; rm -f {PAUSE}")
    assert "ejabberd@lab4" in node_status(lab, "lab1")["db_nodes"], "the join never reached the schema"
    refused = fab("add-master", "--host", "lab4", check=False)
    assert refused.returncode == 1 and "that process is gone: the lock is stale" in refused.stderr, refused.stderr
    fab("break-lock")
    out = fab("add-master", "--host", "lab4", timeout=600).stdout
    assert "an earlier join of ejabberd@lab4 was interrupted; rolled back:" in out, out
    assert "ejabberd@lab4 removed from the schema on ejabberd@lab1" in out, out
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)


def test_two_add_masters_at_once_exactly_one_proceeds(cluster, lab):
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    first = start_paused_add_master(lab, "lab4")     # holds the lock, paused in its join
    second = fab("add-master", "--host", "lab4", check=False, timeout=300)
    ssh(lab, "lab4", f"rm -f {PAUSE}")
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert second.returncode == 1 and "the cluster is locked by" in second.stderr, second.stderr
    assert "add-master --host lab4" in second.stderr
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)


def backup_holds(lab, path: str, user: str, newcomer: str) -> tuple[bool, bool, bool]:
    """Read a backup file as a restore would (its entries in order: a later one replaces an
    earlier one, a deletion removes): (user in passwd, newcomer's copy of passwd in its schema,
    newcomer's copy of the schema in its schema)."""
    held = node_eval(lab, "lab1", (
        "begin F = fun({passwd, {U, _}, _} = R, M) -> {[R], M#{U => in}}; "
        "({passwd, {U, _}} = R, M) -> {[R], maps:remove(U, M)}; "
        "({schema, T, Def} = R, M) when T =:= passwd; T =:= schema -> {[R], M#{T => lists:append("
        "[proplists:get_value(K, Def, []) || K <- [ram_copies, disc_copies, disc_only_copies]])}}; "
        "(R, M) -> {[R], M} end, "
        f'{{ok, M}} = mnesia:traverse_backup("{path}", mnesia_backup, dummy, read_only, F, #{{}}), '
        f'{{maps:is_key(<<"{user}">>, M), lists:member(\'{newcomer}\', maps:get(passwd, M)), '
        f'lists:member(\'{newcomer}\', maps:get(schema, M))}} end'))
    return tuple(part == "true" for part in held.strip("{}\n").split(","))


def test_the_backup_before_a_join_holds_the_cluster_as_the_join_found_it(cluster, lab):
    """add-master's backup (the restore point before the membership changes) is taken beside the
    join: the join begins once the backup's checkpoint is active. With the backup held there
    (fault injection) the whole join runs; a user registered meanwhile is not in the backup, one
    registered before is, and its schema has no copy on the new node: a restore puts back the
    cluster the join found (mnesia:restore reads a table's deletion in a backup's schema as
    "delete the table", so the schema there must be one entry per table, as it was)."""
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    d = domain(lab)
    ssh(lab, "lab1", f"install -d /run/ejabberd && touch {BACKUP_PAUSE}")
    try:
        proc = start_paused_add_master(lab, "lab4")
        ssh(lab, "lab1", f"ejabberdctl register joiner {d} {PASSWORD}")
        ssh(lab, "lab4", f"rm -f {PAUSE}")
        deadline = time.monotonic() + 120
        while ssh(lab, "lab4", f"grep -qs '^result ' {JOIN_PROGRESS}", check=False).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "the join did not end while the backup was held"
            time.sleep(0.3)
        writing = ssh(lab, "lab1", f"ls {MNESIA_BACKUP_DIR}").stdout
        assert ".backup.active" in writing, writing   # the join is done, the backup not yet
    finally:
        ssh(lab, "lab1", f"rm -f {BACKUP_PAUSE}")
        ssh(lab, "lab4", f"rm -f {PAUSE}")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    path = re.search(r"\[lab1\] Mnesia backup: (\S+) ", out).group(1)
    assert backup_holds(lab, path, USERS[0], "ejabberd@lab4") == (True, False, False)
    assert backup_holds(lab, path, "joiner", "ejabberd@lab4")[0] is False
    ssh(lab, "lab1", f"ejabberdctl unregister joiner {d}")
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)


def test_a_join_whose_backup_failed_is_rolled_back(cluster, lab):
    """The backup beside the join is the restore point of the membership change: had it failed
    (here its call into the node is killed while it is held), the change stands with none, so
    the join is rolled back and the run fails, saying why."""
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    ssh(lab, "lab1", f"install -d /run/ejabberd && touch {BACKUP_PAUSE}")
    try:
        proc = fab_paused_in_join(lab, "lab4", "add-master", "--host", "lab4")
        ssh(lab, "lab4", f"rm -f {PAUSE}")
        deadline = time.monotonic() + 120
        while ssh(lab, "lab4", f"grep -qs '^result ' {JOIN_PROGRESS}", check=False).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "the join did not end while the backup was held"
            time.sleep(0.3)
        ssh(lab, "lab1", "pkill -f 'erl_call.*easy_cluster_backup'")
        out, _ = proc.communicate(timeout=300)
    finally:
        ssh(lab, "lab1", f"rm -f {BACKUP_PAUSE}")
        ssh(lab, "lab4", f"rm -f {PAUSE}")
    assert proc.returncode == 1, out
    assert "the Mnesia backup taken before the joins failed" in out and "rolled back:" in out, out
    assert "ejabberd@lab4 removed from the schema on ejabberd@lab1" in out, out
    assert_healthy_with(["lab1", "lab2", "lab3"], cluster, lab)
    fab("add-master", "--host", "lab4", timeout=600)
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)


def test_a_backup_that_cannot_begin_stops_add_master_before_anything_changes(cluster, lab):
    """No restore point, no membership change: a backup that fails before its checkpoint is
    active (here its directory cannot be made) stops add-master before the join has its turn."""
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    ssh(lab, "lab1", f"mv {MNESIA_BACKUP_DIR} {MNESIA_BACKUP_DIR}.kept && touch {MNESIA_BACKUP_DIR}")
    try:
        refused = fab("add-master", "--host", "lab4", check=False, timeout=300)
    finally:
        ssh(lab, "lab1", f"rm -f {MNESIA_BACKUP_DIR} && mv {MNESIA_BACKUP_DIR}.kept {MNESIA_BACKUP_DIR}")
    assert refused.returncode == 1 and "taking a Mnesia backup" in refused.stderr, refused.stdout + refused.stderr
    assert "join ejabberd@lab1 as master, at boot" not in refused.stdout, refused.stdout
    assert "ejabberd@lab4" not in node_status(lab, "lab1")["db_nodes"]
    assert_healthy_with(["lab1", "lab2", "lab3"], cluster, lab)
    fab("add-master", "--host", "lab4", timeout=600)
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)


def test_a_powered_off_node_is_forgotten_and_comes_back_clean(cluster, lab):
    fab("lab.poweroff", "--host", "lab3")
    refused = fab("add-master", "--host", "lab3", check=False)
    assert refused.returncode == 1 and "nothing was changed" in refused.stderr
    out = fab("forget-node", "--host", "lab3", timeout=300).stdout
    assert "its disk still holds the old Mnesia files" in out
    assert_healthy_with(["lab1", "lab2", "lab4"], cluster, lab)
    # booted with its old files, ejabberd starts there again (the init script): add-master
    # must reset it rather than trust its stale tables
    fab("lab.boot", "--host", "lab3")
    out = fab("add-master", "--host", "lab3", timeout=600).stdout
    # the stale node was stopped and its old Mnesia files set aside before it joined again
    assert "reset ejabberd@lab3 (forgotten on" in out and "its old Mnesia files are kept in" in out, out
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)
    log = ssh(lab, "lab3", "cat /var/log/ejabberd/error.log", check=False).stdout
    assert "merge_schema_failed" not in log


def test_backup_on_demand_keeps_the_newest(cluster, lab):
    paths = []
    for _ in range(6):
        out = fab("backup").stdout
        paths.append(out.split("Mnesia backup: ")[1].split()[0])
    kept = ssh(lab, "lab1", f"ls {MNESIA_BACKUP_DIR}/").stdout.split()
    assert len(kept) == 5 and paths[-1].rsplit("/", 1)[1] in kept
    # a real Mnesia backup: it holds the users' table
    assert ssh(lab, "lab1", f"grep -c passwd {paths[-1]}").stdout.strip() != "0"


def test_add_master_of_a_standalone_node_then_a_rolling_restart_leaves_every_unit_running(cluster, lab):
    """The join of a node that already runs (standalone, holding nothing): stopped through its
    unit and joined as it starts again, never by stopping ejabberd inside the running VM (which
    leaves the unit deactivating, killed and restarted by systemd minutes later)."""
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    # an operator starts it by hand, standalone, and forgets it was removed (a departed node
    # would be reset by add-master first, and join as it starts: the other path)
    for host in ("lab1", "lab2", "lab3", "lab4"):
        ssh(lab, host, "rm -f /var/lib/easycluster/departed/ejabberd@lab4")
    ssh(lab, "lab4", "systemctl enable --now ejabberd && ejabberdctl status >/dev/null")
    assert node_status(lab, "lab4")["db_nodes"] == ["ejabberd@lab4"]
    since = time.time()
    out = fab("add-master", "--host", "lab4", timeout=600).stdout
    assert "join ejabberd@lab1 as master (stopped, then joined as it starts)" in out, out
    assert "cluster: 4 members, 4 masters (healthy)" in out, out
    out = fab("rolling-restart", "--drain", "1", timeout=900).stdout
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)
    time.sleep(3)
    assert_units_clean(lab, ["lab1", "lab2", "lab3", "lab4"], since)


def test_remove_node_disables_the_unit_and_a_reboot_does_not_start_it(cluster, lab):
    since = time.time()
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    assert_units_clean(lab, ["lab1", "lab2", "lab3"], since)
    assert unit_state(lab, "lab4") == ("inactive", "disabled")
    fab("lab.poweroff", "--host", "lab4")
    fab("lab.boot", "--host", "lab4")
    time.sleep(5)
    assert unit_state(lab, "lab4") == ("inactive", "disabled")
    assert ssh(lab, "lab4", "pgrep -u ejabberd -f beam", check=False).returncode != 0, "the removed node started"
    assert_healthy_with(["lab1", "lab2", "lab3"], cluster, lab)
    # epmd and the distribution answer members only: lab4 is no longer one, lab2 is
    dist_port = ssh(lab, "lab1", "ss -Hltnp | grep beam.smp | grep -o ':43[7-8][0-9] ' | head -n1").stdout.strip(" :\n")
    assert dist_port, "no distribution port found on lab1"
    for port in ("4369", dist_port):
        assert connects(lab, "lab2", "lab1", port) == "open", port
        assert connects(lab, "lab4", "lab1", port) == "refused", port


def connects(lab, src: str, dst: str, port: str) -> str:
    """open | refused | other, for a TCP connection from host src to dst:port."""
    out = ssh(lab, src, f"timeout 3 bash -c '</dev/tcp/{dst}/{port}' 2>&1 && echo open", check=False).stdout
    return "open" if "open" in out else "refused" if "refused" in out else out.strip() or "timeout"


SHORT_START = "/etc/systemd/system/ejabberd.service.d/zz-test-short-start.conf"


def test_a_first_start_join_may_wait_longer_than_the_units_start_timeout(cluster, lab):
    """A join runs inside the unit's start (no READY=1 until ejabberd runs on the copied
    tables): waiting for its turn or copying big tables may outlast TimeoutStartSec. The join
    pushes the timeout out (EXTEND_TIMEOUT_USEC) as it goes: held here well past a start
    timeout cut to 8 s, the node is neither killed nor restarted."""
    ssh(lab, "lab4", f"printf '[Service]\\nTimeoutStartSec=8\\n' > {SHORT_START} && systemctl daemon-reload")
    try:
        assert ssh(lab, "lab4", "systemctl show ejabberd -p TimeoutStartUSec").stdout.strip() == "TimeoutStartUSec=8s"
        since = time.time()
        proc = start_paused_add_master(lab, "lab4")
        # the joining VM, connected to the cluster while ejabberd has not started, ticks at the
        # cluster's net_ticktime (15 in the lab): at Erlang's default 60 its peers could count
        # it down during this silent wait and see it partitioned once it is back
        assert node_eval(lab, "lab4", "net_kernel:get_net_ticktime()") == "15"
        time.sleep(20)          # held in its start, before copying tables, for longer than 8 s (and 15)
        assert unit_state(lab, "lab4")[0] == "activating"
        ssh(lab, "lab4", f"rm -f {PAUSE}")
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)
        assert_units_clean(lab, ["lab4"], since)
    finally:
        ssh(lab, "lab4", f"rm -f {SHORT_START} {PAUSE} && systemctl daemon-reload")


def test_a_host_where_the_package_started_its_own_node_is_reset_and_added(cluster, lab):
    """`apt-get install ejabberd` on a real server starts ejabberd@localhost at once (the
    package's postinst, through systemd). add-master resets it and joins it as a master."""
    fab("remove-node", "--host", "lab4", "--drain", "0", timeout=300)
    fab("lab.wipe", "--host", "lab4")
    ssh(lab, "lab4", "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                     "ejabberd erlang-dev >/dev/null", timeout=600)
    ssh(lab, "lab4", "for i in $(seq 100); do ejabberdctl status >/dev/null 2>&1 && break; sleep 0.3; done")
    assert "ejabberd@localhost" in ssh(lab, "lab4", "pgrep -a -u ejabberd -f beam").stdout
    since = time.time()
    out = fab("add-master", "--host", "lab4", timeout=600).stdout
    assert "[lab4] reset ejabberd@localhost, which the package started" in out, out
    assert "its old Mnesia files are kept in" in out, out
    assert "cluster: 4 members, 4 masters (healthy)" in out, out
    assert_healthy_with(["lab1", "lab2", "lab3", "lab4"], cluster, lab)
    assert "ejabberd@localhost" not in ssh(lab, "lab4", "pgrep -a -u ejabberd -f beam").stdout
    assert unit_state(lab, "lab4") == ("active", "enabled")
    assert_units_clean(lab, ["lab4"], since)
