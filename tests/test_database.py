"""cluster.database on a lab of its own: 3 nodes and a database host (lab4) with Debian's
PostgreSQL under its systemd unit, real XMPP clients.

A Mnesia cluster holding accounts, roster items, offline messages, rooms and a vCard is
moved by `fab migrate-to-sql`, with writes to Mnesia during the switch copied over; then the
SQL cluster: accounts registered on any node land in PostgreSQL, roster and offline messages
work across nodes, secrets stay secret, bad input stops the run before any change, the
database host powered off is reported and survived, and `fab backup` takes a pg_dump.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import FAB, REPO, fab, own_lab, ssh
from easycluster import xmpp

pytestmark = pytest.mark.lab   # a lab of its own (own_lab), not the session's

LAB = "db"
NODES, DB_HOST = ["lab1", "lab2", "lab3"], "lab4"
D = f"{LAB}.test"
PW = "db-pw"
USERS = [f"u{i}" for i in range(8)]


def write_inventory(lab, directory: Path, name: str, database: dict | None, cluster_name: str | None = None,
                    version: str | None = None) -> str:
    data = yaml.safe_load(lab.inventory.read_text())
    data["nodes"] = [{"host": h} for h in NODES]
    if version:
        data["cluster"]["ejabberd_version"] = version
    if database is not None:
        data["cluster"]["database"] = database
    if cluster_name:
        data["cluster"]["name"] = cluster_name
    path = directory / f"{name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def dfab(inv: str, *args: str, check: bool = True, timeout: float = 900, env: dict | None = None):
    return fab(*args, "-i", inv, lab=LAB, check=check, timeout=timeout, env=env)


def psql(lab, query: str, check: bool = True) -> str:
    """A query on the database host, as PostgreSQL's superuser (not through the toolkit);
    without `check`, "" while the database or the table is not there yet."""
    r = ssh(lab, DB_HOST, f"cd / && runuser -u postgres -- psql -X -q -t -A -d ejabberd -c \"{query}\"", check=check)
    return r.stdout.strip() if r.returncode == 0 else ""


def inbox(address: str, jid: str, password: str, expect: set[str], bound: float = 20) -> set[str]:
    """Log in and collect the bodies of the chat messages that arrive (offline storage's
    first), until every one of `expect` did or `bound` seconds pass."""
    async def run():
        client = xmpp.Client(jid, password)
        try:
            await xmpp.connect(client, address, 5222)
            got: set[str] = set()
            deadline = time.monotonic() + bound
            while not expect <= got and time.monotonic() < deadline:
                try:
                    _frm, body, _at = await asyncio.wait_for(client.inbox.get(), deadline - time.monotonic())
                    got.add(body)
                except asyncio.TimeoutError:
                    break
            return got
        finally:
            client.disconnect()
    return asyncio.run(run())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with own_lab(LAB, len(NODES) + 1) as lab:
        directory = tmp_path_factory.mktemp("database")
        managed = {"type": "postgresql", "host": DB_HOST, "password_file": str(directory / "db.password")}
        invs = {"mnesia": write_inventory(lab, directory, "mnesia", None),
                "sql": write_inventory(lab, directory, "sql", managed)}
        outputs: list[str] = []
        outputs.append(dfab(invs["mnesia"], "deploy").stdout)
        script = "; ".join(f"ejabberdctl register {u} {D} {PW} >/dev/null" for u in USERS)
        script += "; " + "; ".join(f"ejabberdctl add_rosteritem u0 {D} {u} {D} {u} friends both" for u in USERS[1:5])
        script += "; " + "; ".join(f"ejabberdctl send_message chat u1@{D} u2@{D} s 'stored {i}'" for i in range(3))
        # (create_room_with_opts' list syntax differs between 23.01 and 24.12: these two read alike)
        script += "; " + "; ".join(f"ejabberdctl create_room room{i} conference.{D} {D}; "
                                   f"ejabberdctl change_room_option room{i} conference.{D} persistent true"
                                   for i in range(2))
        script += f"; ejabberdctl set_vcard u1 {D} FN 'User One'"
        ssh(lab, "lab1", script)
        yield lab, directory, invs, outputs


def test_migration_moves_every_store_with_equal_counts_and_the_switch_loses_nothing(setup):
    lab, directory, invs, outputs = setup
    refused = dfab(invs["sql"], "deploy", check=False)
    assert refused.returncode == 1 and "the cluster's data is in Mnesia (8 accounts)" in refused.stderr, refused.stderr
    assert "fab migrate-to-sql" in refused.stderr
    assert ssh(lab, DB_HOST, "dpkg -s postgresql", check=False).returncode != 0, "deploy changed the database host"

    dry = dfab(invs["sql"], "migrate-to-sql", "--dry").stdout
    assert "[database lab4] install PostgreSQL" in dry and "switch ejabberd@lab3 to the database" in dry, dry
    assert ssh(lab, DB_HOST, "dpkg -s postgresql", check=False).returncode != 0, "a dry run changed the database host"

    pause = directory / "pause"
    pause.touch()
    env = {**os.environ, "EASYCLUSTER_LAB": LAB, "EASYCLUSTER_INVENTORY": invs["sql"],
           "EASYCLUSTER_MIGRATE_PAUSE": str(pause)}
    proc = subprocess.Popen([str(FAB), "migrate-to-sql", "-i", invs["sql"]], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while psql(lab, "SELECT migration FROM easycluster_cluster", check=False).split(" ")[0] != "exported":
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the migration never finished its export"
            time.sleep(0.5)
        # between the export and the switch: written to Mnesia through a node not yet switched
        ssh(lab, "lab3", f"ejabberdctl register late {D} {PW} && ejabberdctl add_rosteritem u0 {D} late {D} late "
                         f"friends both && ejabberdctl send_message chat u1@{D} u3@{D} s 'during the switch'")
    finally:
        pause.unlink()
        out = proc.communicate(timeout=600)[0]
    outputs.append(out)
    assert proc.returncode == 0, out
    assert "copied over after the switch: users 1, roster 1, offline 1" in out, out
    # at the export (before any switch), and at the end (with what was copied over)
    assert "rows per table equal: users 8, rosterusers 4, spool 3, vcard 1, last 8, muc_room 2" in out, out
    for table, count in (("users", 9), ("rosterusers", 5), ("spool", 4), ("muc_room", 2), ("vcard", 1)):
        assert f"  {table:16} {count:>9} -> {count}" in out, (table, out)
    counts = {t: int(psql(lab, f"SELECT count(*) FROM {t}")) for t in ("users", "rosterusers", "spool", "muc_room")}
    assert counts == {"users": 9, "rosterusers": 5, "spool": 4, "muc_room": 2}, counts

    assert inbox(lab.ip("lab2"), f"u2@{D}", PW, {f"stored {i}" for i in range(3)}) == {f"stored {i}" for i in range(3)}
    assert inbox(lab.ip("lab1"), f"u3@{D}", PW, {"during the switch"}) == {"during the switch"}
    assert xmpp.can_login(lab.ip("lab3"), f"late@{D}", PW)
    roster = ssh(lab, "lab2", f"ejabberdctl get_roster u0 {D}").stdout
    assert all(f"{u}@{D}" in roster for u in USERS[1:5] + ["late"]), roster
    assert "User One" in ssh(lab, "lab3", f"ejabberdctl get_vcard u1 {D} FN").stdout
    for node in NODES:   # every node on the database: Mnesia holds no disc table but the schema
        assert "\ndefault_db: sql\n" in ssh(lab, node, "cat /etc/ejabberd/ejabberd.yml").stdout
    again = dfab(invs["sql"], "migrate-to-sql").stdout
    assert "nothing to migrate" in again, again
    assert "no changes: the cluster matches the inventory" in dfab(invs["sql"], "deploy").stdout


def test_accounts_roster_and_offline_messages_work_across_nodes_in_postgresql(setup):
    lab, _, _, _ = setup
    for node in NODES:                                                # in-band, through each node
        xmpp.register(lab.ip(node), f"via{node}@{D}", PW)
    assert psql(lab, "SELECT string_agg(username, ' ' ORDER BY username) FROM users WHERE username LIKE 'via%'"
                ) == "vialab1 vialab2 vialab3"
    xmpp.register(lab.ip("lab2"), f"fresh@{D}", PW)
    assert psql(lab, "SELECT server_host FROM users WHERE username = 'fresh'") == D
    ssh(lab, "lab1", f"ejabberdctl add_rosteritem fresh {D} u5 {D} u5 mates both")
    assert f"u5@{D}" in ssh(lab, "lab3", f"ejabberdctl get_roster fresh {D}").stdout
    assert psql(lab, "SELECT jid FROM rosterusers WHERE username = 'fresh'") == f"u5@{D}"
    # fresh is offline: stored in the database through lab1, delivered at its login on lab3
    ssh(lab, "lab1", f"ejabberdctl send_message chat u5@{D} fresh@{D} s 'kept in sql'")
    assert psql(lab, "SELECT count(*) FROM spool WHERE username = 'fresh'") == "1"
    assert inbox(lab.ip("lab3"), f"fresh@{D}", PW, {"kept in sql"}) == {"kept in sql"}
    assert psql(lab, "SELECT count(*) FROM spool WHERE username = 'fresh'") == "0"
    latency = xmpp.send_and_receive((lab.ip("lab1"), f"u5@{D}", PW), (lab.ip("lab2"), f"fresh@{D}", PW), "live")
    assert latency < 5


def test_secrets_stay_secret(setup):
    lab, directory, invs, outputs = setup
    password_file = directory / "db.password"
    password = password_file.read_text().strip()
    assert len(password) >= 32 and oct(password_file.stat().st_mode & 0o777) == "0o600"
    outputs.append(dfab(invs["sql"], "deploy", "--dry").stdout)
    outputs.append(dfab(invs["sql"], "status", "--json").stdout)
    for out in outputs:
        assert password not in out
    for node in NODES:
        mode = ssh(lab, node, "stat -c '%a %U' /etc/ejabberd/easycluster-sql.yml").stdout.split()
        assert mode == ["400", "ejabberd"], (node, mode)
        assert password not in ssh(lab, node, "cat /etc/ejabberd/ejabberd.yml /var/log/ejabberd/*.log").stdout
    # the database host never had the password: PostgreSQL holds its SCRAM verifier only
    assert psql(lab, "SELECT rolpassword FROM pg_authid WHERE rolname = 'ejabberd'").startswith("SCRAM-SHA-256$4096:")
    found = ssh(lab, DB_HOST, f"grep -rlF '{password}' /etc /var/lib/easycluster /var/log /root 2>/dev/null || true")
    assert not found.stdout.strip(), found.stdout
    hba = ssh(lab, DB_HOST, "cat /etc/postgresql/*/main/pg_hba.conf").stdout
    assert all(f"host  ejabberd  ejabberd  {lab.ip(n)}/32  scram-sha-256" in hba for n in NODES), hba


def test_bad_database_input_is_refused_before_any_change(setup):
    lab, directory, _, _ = setup
    wrong = directory / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    cases = [
        ({"host": DB_HOST, "password_file": str(wrong)}, None,
         "lab4:5432 refused ejabberd from lab1: password authentication failed for user \"ejabberd\""),
        ({"host": DB_HOST, "port": 5433, "password_file": str(directory / "db.password")}, None,
         "cannot reach lab4:5433 from lab2"),
        ({"host": DB_HOST, "password_file": str(directory / "db.password")}, "another",
         "postgresql ejabberd on lab4:5432 holds the data of cluster 'db'"),
    ]
    for external, name, expected in cases:
        inv = write_inventory(lab, directory, f"external-{name or external.get('port', 'pw')}",
                              {"type": "postgresql", "external": external}, cluster_name=name)
        before = ssh(lab, "lab1", "md5sum /etc/ejabberd/ejabberd.yml").stdout
        r = dfab(inv, "deploy", check=False)
        assert r.returncode == 1 and "preflight failed" in r.stderr and expected in r.stderr, (expected, r.stderr)
        assert ssh(lab, "lab1", "md5sum /etc/ejabberd/ejabberd.yml").stdout == before


def test_database_host_powered_off_is_reported_clients_refused_cleanly_then_all_works(setup):
    lab, _, invs, _ = setup
    lab.poweroff(DB_HOST)
    try:
        st = dfab(invs["sql"], "status", "--json", check=False)
        data = json.loads(st.stdout)
        assert st.returncode == 1 and data["database"]["reachable_from"] == [], data["database"]
        assert all(f"{n}: cannot use the database: cannot reach lab4:5432 from {n}" in " ".join(data["problems"])
                   for n in NODES), data["problems"]
        table = dfab(invs["sql"], "status", check=False).stdout
        assert "database: postgresql ejabberd on lab4:5432 (NOT reachable); reachable from 0/3 nodes" in table
        started = time.monotonic()
        try:   # an account this node has not seen: nothing cached, the database is asked
            refused = not xmpp.can_login(lab.ip("lab2"), f"u6@{D}", PW)
        except TimeoutError:
            refused = False
        assert refused, "a login with the database down was not refused"
        assert time.monotonic() - started < 20
    finally:
        lab.boot(DB_HOST)
    deadline = time.monotonic() + 120
    while dfab(invs["sql"], "status", check=False).returncode != 0:
        assert time.monotonic() < deadline, dfab(invs["sql"], "status", check=False).stdout
        time.sleep(2)
    assert xmpp.can_login(lab.ip("lab2"), f"u6@{D}", PW)
    ssh(lab, "lab3", f"ejabberdctl send_message chat u1@{D} u7@{D} s 'after the outage'")
    assert inbox(lab.ip("lab1"), f"u7@{D}", PW, {"after the outage"}) == {"after the outage"}
    assert "no changes: the cluster matches the inventory" in dfab(invs["sql"], "deploy").stdout


def test_backup_takes_a_pg_dump_and_the_restore_runbook_puts_it_back(setup):
    lab, _, invs, _ = setup
    out = dfab(invs["sql"], "backup").stdout
    line = next(line for line in out.splitlines() if "pg_dump of ejabberd:" in line)
    path = line.split("pg_dump of ejabberd: ", 1)[1].split(" (")[0]
    listing = ssh(lab, DB_HOST, f"cd / && runuser -u postgres -- pg_restore --list {path}").stdout
    assert "TABLE DATA public users" in listing and "TABLE DATA public spool" in listing, listing
    assert ssh(lab, DB_HOST, f"stat -c %a {Path(path).parent}").stdout.strip() == "700"
    # docs/runbooks/restore.md, "With cluster.database": an account lost after the dump comes back
    ssh(lab, "lab1", f"ejabberdctl unregister u4 {D}")
    assert psql(lab, "SELECT count(*) FROM users WHERE username = 'u4'") == "0"
    ssh(lab, DB_HOST, f"cd / && runuser -u postgres -- pg_restore --clean --if-exists --single-transaction "
                      f"--dbname=ejabberd {path}")
    dfab(invs["sql"], "rolling-restart", "--drain", "1")
    assert psql(lab, "SELECT count(*) FROM users WHERE username = 'u4'") == "1"
    assert xmpp.can_login(lab.ip("lab2"), f"u4@{D}", PW)


def test_a_node_removed_is_shut_out_of_the_database_and_let_in_again_when_added(setup):
    lab, _, invs, _ = setup
    def hba() -> str:
        return ssh(lab, DB_HOST, "cat /etc/postgresql/*/main/pg_hba.conf").stdout
    line = f"host  ejabberd  ejabberd  {lab.ip('lab3')}/32  scram-sha-256"
    out = dfab(invs["sql"], "remove-node", "--host", "lab3", "--drain", "1").stdout
    assert "[lab4] pg_hba.conf: ejabberd@lab3 no longer let in: ok" in out, out
    assert line not in hba() and f"{lab.ip('lab2')}/32" in hba()
    out = dfab(invs["sql"], "add-master", "--host", "lab3").stdout
    assert "[database lab4] write easycluster's lines of" in out and "during its first start" in out, out
    assert line in hba()
    users = psql(lab, "SELECT count(*) FROM users")
    assert ssh(lab, "lab3", f"ejabberdctl registered_users {D} | wc -l").stdout.strip() == users
    assert xmpp.can_login(lab.ip("lab3"), f"u5@{D}", PW)


def test_an_external_server_is_used_as_is_and_backed_up_from_a_node(setup):
    """The same database, named as an existing server (`external`): nothing changes on the
    database host; the nodes get PostgreSQL's client, and fab backup's pg_dump runs on a node,
    logging in with a password file that is gone afterwards."""
    lab, directory, _, _ = setup
    inv = write_inventory(lab, directory, "external-same", {"type": "postgresql", "external": {
        "host": DB_HOST, "password_file": str(directory / "db.password")}})
    hba = ssh(lab, DB_HOST, "md5sum /etc/postgresql/*/main/pg_hba.conf").stdout
    out = dfab(inv, "deploy").stdout
    assert "install postgresql-client (pg_dump, for fab backup)" in out, out
    assert "[database" not in out, out
    assert ssh(lab, DB_HOST, "md5sum /etc/postgresql/*/main/pg_hba.conf").stdout == hba
    backup = dfab(inv, "backup").stdout
    line = next(line for line in backup.splitlines() if "pg_dump of ejabberd:" in line)
    assert line.startswith("[lab1] "), line
    path = line.split("pg_dump of ejabberd: ", 1)[1].split(" (")[0]
    assert "TABLE DATA public users" in ssh(lab, "lab1", f"pg_restore --list {path}").stdout
    assert ssh(lab, "lab1", "ls /root/.easycluster-pgpass.* 2>/dev/null | wc -l").stdout.strip() == "0"
    assert "no changes: the cluster matches the inventory" in dfab(inv, "deploy").stdout


# the catalog of ejabberd's tables (not easycluster's mark): columns, then indexes and keys
CATALOG = ("SELECT string_agg(concat_ws(' ', table_name, column_name, data_type, is_nullable, column_default), "
           "E'\\n' ORDER BY table_name, column_name) FROM information_schema.columns WHERE table_schema = 'public' "
           "AND table_name <> 'easycluster_cluster'",
           "SELECT string_agg(indexdef, E'\\n' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public' "
           "AND tablename <> 'easycluster_cluster'")


def catalog(lab, database: str) -> list[str]:
    return [ssh(lab, DB_HOST, f"cd / && runuser -u postgres -- psql -X -q -t -A -d {database} -c \"{q}\"").stdout
            for q in CATALOG]


def test_upgrade_to_26_07_takes_the_schema_steps_once_with_every_node_stopped(setup):
    """24.12 -> 26.07 from trixie-backports with the data in PostgreSQL: a full stop whose
    schema steps run after the last node stopped and before the first one starts; accounts,
    roster items, offline messages and logins survive; the database then has the schema 26.07's
    own pg.new.sql makes; the way back is refused while the database has the steps; a rerun
    says no changes."""
    lab, directory, _, _ = setup
    old = yaml.safe_load(lab.inventory.read_text())["cluster"]["ejabberd_version"]
    new = "26.07-1~bpo13+1"
    assert old.startswith("24.12-"), old
    managed = {"type": "postgresql", "host": DB_HOST, "password_file": str(directory / "db.password")}
    inv = write_inventory(lab, directory, "sql-26", managed, version=new)
    back = write_inventory(lab, directory, "sql-24", managed, version=old)
    users, roster = psql(lab, "SELECT count(*) FROM users"), psql(lab, "SELECT count(*) FROM rosterusers")
    ssh(lab, "lab2", f"ejabberdctl send_message chat u5@{D} u6@{D} s 'kept across 26.07'")   # u6 is offline
    assert psql(lab, "SELECT count(*) FROM spool WHERE username = 'u6'") == "1"

    dry = dfab(inv, "upgrade", "--dry").stdout
    assert "strategy: full stop" in dry and "25.03: users." in dry, dry
    assert "schema steps 25.03, 26.01, 26.03 in one transaction" in dry, dry
    out = dfab(inv, "upgrade", timeout=1800).stdout
    last_stop, steps = out.rfind("and stop"), out.find("[database] schema steps 25.03, 26.01, 26.03 in")
    first_start = out.find("start, held until")
    assert -1 < last_stop < steps < first_start, out     # no node of either version runs meanwhile
    assert "  applied: 25.03, 26.01, 26.03" in out, out
    assert "pg_dump of ejabberd:" in out[:steps], out
    assert f"cluster: 3 nodes on ejabberd {new} (healthy)" in out, out

    # the data: every account and roster item, the legacy rows' type 0 read and set by 26.07
    assert psql(lab, "SELECT count(*) FROM users") == users
    assert psql(lab, "SELECT count(*) FROM rosterusers") == roster
    assert psql(lab, "SELECT count(*) FROM rosterusers WHERE approved") == "0"
    assert psql(lab, "SELECT type FROM users WHERE username = 'u5'") == "0"
    assert xmpp.can_login(lab.ip("lab3"), f"u5@{D}", PW)
    assert psql(lab, "SELECT type FROM users WHERE username = 'u5'") in ("1", "2", "3", "4")
    assert f"u1@{D}" in ssh(lab, "lab2", f"ejabberdctl get_roster u0 {D}").stdout
    assert inbox(lab.ip("lab1"), f"u6@{D}", PW, {"kept across 26.07"}) == {"kept across 26.07"}
    xmpp.register(lab.ip("lab2"), f"after26@{D}", PW)
    assert psql(lab, "SELECT type FROM users WHERE username = 'after26'") in ("1", "2", "3", "4")
    assert xmpp.can_login(lab.ip("lab1"), f"after26@{D}", PW)

    # the schema: as 26.07's pg.new.sql makes it in an empty database
    text = ssh(lab, "lab1", "base64 -w0 /usr/share/ejabberd/sql/pg.new.sql").stdout.strip()
    ssh(lab, DB_HOST, "cd / && runuser -u postgres -- dropdb --if-exists fresh26 && "
                      "runuser -u postgres -- createdb fresh26 && "
                      f"echo {text} | base64 -d | runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d fresh26")
    assert catalog(lab, "ejabberd") == catalog(lab, "fresh26")
    ssh(lab, DB_HOST, "cd / && runuser -u postgres -- dropdb fresh26")

    # no way back to 24.12 over the changed schema: refused before anything changes
    refused = dfab(back, "upgrade", "--dry", check=False)
    assert refused.returncode != 0 and "cannot write to it" in refused.stderr + refused.stdout, refused
    refused = dfab(back, "upgrade", "--revert", check=False)
    assert refused.returncode != 0, refused
    assert "the database has ejabberd's schema steps 25.03, 26.01, 26.03" in refused.stderr + refused.stdout
    assert ssh(lab, "lab3", "dpkg-query -W -f='${Version}' ejabberd && ejabberdctl status >/dev/null").stdout == new
    assert "no changes" in dfab(inv, "upgrade").stdout

    # the way back (docs/runbooks/upgrade.md, "Back from 26.07 with cluster.database")
    dump = out.split("pg_dump of ejabberd: ", 1)[1].split(" (")[0]
    for node in reversed(NODES):
        ssh(lab, node, "systemctl stop ejabberd")
    ssh(lab, DB_HOST, f"cd / && runuser -u postgres -- pg_restore --clean --if-exists --single-transaction "
                      f"--dbname=ejabberd {dump} && runuser -u postgres -- psql -X -q -d ejabberd "
                      "-c 'DROP TABLE IF EXISTS invite_token'")
    reverted = dfab(back, "upgrade", "--revert", timeout=1800).stdout
    assert f"reverted: 3 nodes on ejabberd {old}" in reverted, reverted
    assert psql(lab, "SELECT count(*) FROM users") == users          # as of the dump: after26 is gone
    assert xmpp.can_login(lab.ip("lab2"), f"u5@{D}", PW)
    assert not xmpp.can_login(lab.ip("lab2"), f"after26@{D}", PW)
    assert f"u1@{D}" in ssh(lab, "lab3", f"ejabberdctl get_roster u0 {D}").stdout
    assert "no changes" in dfab(back, "upgrade").stdout
