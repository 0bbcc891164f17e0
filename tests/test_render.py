"""Rendering the managed files: real templates, StrictUndefined, no hosts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from easycluster import render
from easycluster.errors import EasyClusterError
from easycluster.inventory import parse_inventory
from easycluster.paths import COOKIE_PATH, EJABBERD_DEFAULT, EJABBERD_YML, EPMD_DROPIN
from easycluster.render import managed_files
from easycluster.secrets import Secret

COOKIE = Secret("S" * 40)


def inv(**cluster):
    data = {"cluster": {"name": "t", "ejabberd_version": "23.01-1", "domains": ["a.test", "b.test"],
                        "admins": ["ops@a.test"], "cookie": {"env": "X"}, **cluster},
            "nodes": [{"host": "lab1"}, {"host": "lab2.example.org", "name": "ejabberd@lab2"}]}
    return parse_inventory(yaml.safe_dump(data), Path("/inv/t.yml"))


def files(inventory, host="lab1", addr="10.0.0.1"):
    return {f.path: f for f in managed_files(inventory, inventory.node(host), addr, COOKIE)}


def test_ejabberd_yml_is_valid_yaml_with_the_inventory_values():
    conf = yaml.safe_load(files(inv(loglevel="warning", listen={"c2s": 15222}))[EJABBERD_YML].content)
    assert conf["hosts"] == ["a.test", "b.test"]
    assert conf["loglevel"] == "warning"
    assert conf["listen"][0] == {**conf["listen"][0], "port": 15222, "module": "ejabberd_c2s"}
    assert conf["acl"]["admin"]["user"] == ["ops@a.test"]
    assert "easy_cluster" in conf["modules"]
    assert conf["access_rules"]["register"] == {"deny": "all"}
    assert yaml.safe_load(files(inv(in_band_registration=True))[EJABBERD_YML].content)[
        "access_rules"]["register"] == {"allow": "all"}


@pytest.mark.parametrize("limit, rule", [
    (None, {5000: "admin", 1000: "all"}),      # the default: 1000 per user, admins 5000
    (20, {5000: "admin", 20: "all"}),
    (5000, {5000: "all"}),                      # admins get no less than anyone
    (20000, {20000: "all"}),
], ids=["default", "below the admins'", "equal to the admins'", "above"])
def test_the_offline_limit_is_ejabberds_max_user_offline_messages(limit, rule):
    given = {} if limit is None else {"offline_limit": limit}
    conf = yaml.safe_load(files(inv(**given))[EJABBERD_YML].content)
    assert conf["shaper_rules"]["max_user_offline_messages"] == rule
    assert conf["modules"]["mod_offline"]["access_max_user_messages"] == "max_user_offline_messages"


def test_certfiles_turn_on_required_starttls():
    conf = yaml.safe_load(files(inv(certfiles=["/etc/ejabberd/a.pem"]))[EJABBERD_YML].content)
    assert conf["certfiles"] == ["/etc/ejabberd/a.pem"] and conf["listen"][0]["starttls_required"] is True
    plain = yaml.safe_load(files(inv())[EJABBERD_YML].content)
    assert "certfiles" not in plain and "starttls_required" not in plain["listen"][0]


def test_net_ticktime_is_set_in_ejabberd_yml_and_in_every_vms_erl_options():
    conf = yaml.safe_load(files(inv())[EJABBERD_YML].content)
    assert conf["net_ticktime"] == 60
    default = files(inv(distribution={"net_ticktime": 15}))[EJABBERD_DEFAULT].content
    erl_options = [line for line in default.splitlines() if line.startswith("ERL_OPTIONS=")]
    assert len(erl_options) == 1 and "-kernel net_ticktime 15 " in erl_options[0], default
    # over TLS too: both of the template's ERL_OPTIONS carry the same options
    template = (render.TEMPLATES / "ejabberd.default.j2").read_text()
    lines = [line for line in template.splitlines() if line.startswith("ERL_OPTIONS=")]
    assert len(lines) == 2 and all("{{ dist }}" in line for line in lines)


@pytest.mark.parametrize("command", ["foreground", "foreground-quiet", "start", "live", "backup", "status",
                                     "easy_cluster_backup", "debug", ""])
def test_the_node_and_ejabberdctls_own_node_tick_at_the_clusters_net_ticktime(tmp_path, command):
    """ejabberdctl reads /etc/default/ejabberd with the command as $1. The node boots at the
    cluster's net_ticktime (ejabberd sets ejabberd.yml's only once its tables are loaded: booted
    at 60, a node reloading a million users was counted down by peers at 15, and Mnesia saw a
    partition), and so does ejabberdctl's node (or a command silent longer is cut off)."""
    import subprocess
    path = tmp_path / "ejabberd"
    path.write_text(files(inv(distribution={"net_ticktime": 15}))[EJABBERD_DEFAULT].content)
    out = subprocess.run(["sh", "-c", f'. "{path}"; echo "$ERL_OPTIONS"', "ejabberdctl", *([command] if command else [])],
                         capture_output=True, text=True, check=True).stdout
    assert out.count("-kernel net_ticktime") == 1 and "-kernel net_ticktime 15" in out, out


def test_without_admins_the_acl_is_an_empty_list():
    conf = yaml.safe_load(files(inv(admins=[]))[EJABBERD_YML].content)
    assert conf["acl"]["admin"]["user"] == []


@pytest.mark.parametrize("host, expected", [
    ("lab1", ["ERLANG_NODE=ejabberd@lab1", "FIREWALL_WINDOW=4370-4379"]),
    ("lab2.example.org", ["ERLANG_NODE=ejabberd@lab2"]),
])
def test_default_file_names_the_node_interface_window_and_plugin_path(host, expected):
    text = files(inv(), host)[EJABBERD_DEFAULT].content
    lines = text.splitlines()
    for line in expected:
        assert line in lines
    # the interface as the kernel option itself: INET_DIST_INTERFACE= costs ejabberdctl a VM per call
    # and no disconnects of running nodes by global (see the template)
    assert ('ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {10,0,0,1} '
            '-kernel prevent_overlapping_partitions false -kernel net_ticktime 60 '
            '-pa /usr/local/lib/easy_cluster/ebin"') in lines
    assert not any(line.startswith("INET_DIST_INTERFACE=") for line in lines)


def test_cookie_file_is_the_secret_0400_owned_by_ejabberd_and_redacted():
    cookie = files(inv())[COOKIE_PATH]
    assert cookie.secret and cookie.data() == b"S" * 40
    assert (cookie.mode, cookie.owner, cookie.group) == (0o400, "ejabberd", "ejabberd")
    assert "S" * 40 not in repr(cookie) and "S" * 40 not in f"{cookie.content}"


def test_a_variable_missing_from_the_inventory_is_an_error_naming_the_template(tmp_path, monkeypatch):
    (tmp_path / "ejabberd.yml.j2").write_text("hosts: {{ cluster.domains }}\nx: {{ cluster.no_such_key }}\n")
    (tmp_path / "ejabberd.default.j2").write_text("ERLANG_NODE={{ node.name }}\n")
    (tmp_path / "ejabberd.service.d.conf.j2").write_text("[Service]\n")
    (tmp_path / "epmd.socket.d.conf.j2").write_text("[Socket]\n")
    monkeypatch.setattr(render, "TEMPLATES", tmp_path)
    with pytest.raises(EasyClusterError) as err:
        files(inv())
    assert "templates/ejabberd.yml.j2" in str(err.value) and "no_such_key" in str(err.value)


@pytest.mark.parametrize("addr, expected", [
    ("10.0.0.1", ["", "127.0.0.1:4369", "10.0.0.1:4369"]),
    ("127.0.0.1", ["", "127.0.0.1:4369"]),          # a one-host cluster: loopback once
])
def test_epmd_listens_on_loopback_and_the_cluster_address_only(addr, expected):
    dropin = files(inv(), addr=addr)[EPMD_DROPIN]
    lines = dropin.content.splitlines()
    assert [ln.split("=", 1)[1] for ln in lines if ln.startswith("ListenStream=")] == expected
    assert "[Socket]" in lines and "FreeBind=true" in lines and dropin.restart


def test_no_message_is_bounced_or_dropped_by_configuration():
    """Two settings `make load` found messages lost by (docs/reliability.md): stream
    management's "if_offline" bounced a closed session's unacknowledged messages as errors when
    the user was already back under another resource; Mnesia's cluster backend drops a message
    for another node's session when the link is busy or cut."""
    conf = yaml.safe_load(files(inv())[EJABBERD_YML].content)
    assert conf["modules"]["mod_stream_mgmt"]["resend_on_timeout"] is True
    assert conf["cluster_backend"] == "easy"
    assert conf["modules"]["mod_offline"]["db_type"] == "easy"     # stored in a transaction


@pytest.mark.parametrize("version, watchdog_off", [
    ("23.01-1", True),              # Debian 12's unit has WatchdogSec=30: turned off
    ("24.12-3~bpo12+1", False),     # Debian 12's backport: its unit has no watchdog
    ("24.12-3+deb13u2", False),     # Debian 13's: no watchdog either
    ("26.07-1~bpo13+1", False),
])
def test_the_unit_drop_in_sets_only_what_the_installed_units_need(version, watchdog_off):
    from easycluster.paths import UNIT_DROPIN
    dropin = files(inv(ejabberd_version=version))[UNIT_DROPIN].content
    assert ("\nWatchdogSec=0\n" in dropin) is watchdog_off
    assert "\nRestartPreventExitStatus=78\n" in dropin and "\nTimeoutStopSec=" in dropin
    # the stop: Debian's ExecStop (two more VMs) cleared, one SIGTERM to the unit's own VM, waited for
    exec_stops = [ln for ln in dropin.splitlines() if ln.startswith("ExecStop=")]
    assert exec_stops[0] == "ExecStop=" and len(exec_stops) == 2, exec_stops
    assert "pkill -TERM -x beam.smp --cgroup /system.slice/ejabberd.service" in exec_stops[1]
    assert "ejabberdctl" not in exec_stops[1]


@pytest.mark.parametrize("storage, satellite, expected", [
    # (cluster.storage, the node a satellite, each user table's storage_type in its ejabberd.schema)
    (None, False, "disc_only_copies"),          # ejabberd's own default, written out
    ("disc_only_copies", False, "disc_only_copies"),
    ("disc_copies", False, "disc_copies"),
    ("disc_copies", True, None),                # a satellite holds no copy: caps_features in RAM only
])
def test_a_masters_schema_file_gives_the_user_tables_cluster_storage(storage, satellite, expected):
    from easycluster.inventory import USER_TABLES
    from easycluster.paths import MNESIA_SCHEMA_FILE
    data = {"cluster": {"name": "t", "ejabberd_version": "23.01-1", "domains": ["a.test"], "cookie": {"env": "X"},
                        **({"storage": storage} if storage else {})},
            "nodes": [{"host": "lab1"}, {"host": "lab2", **({"role": "satellite"} if satellite else {})}]}
    inventory = parse_inventory(yaml.safe_dump(data), Path("/inv/t.yml"))
    schema = yaml.safe_load(files(inventory, "lab2")[MNESIA_SCHEMA_FILE].content)
    if expected is None:
        assert schema == {"caps_features": {"storage_type": "ram_copies"}}
    else:
        assert schema == {t: {"storage_type": expected} for t in USER_TABLES}
        assert "passwd" in schema and "roster" in schema


def test_with_a_database_a_master_has_no_schema_file(monkeypatch):
    from easycluster.paths import MNESIA_SCHEMA_FILE
    monkeypatch.setenv("DBPW", "x" * 20)
    database = {"type": "postgresql", "host": "db1", "password_env": "DBPW"}
    assert MNESIA_SCHEMA_FILE not in files(inv(database=database))


@pytest.mark.parametrize("version, pinned_off", [
    ("23.01-1", False),             # no schema updater (an unknown option there)
    ("24.12-3+deb13u2", True),      # update_sql_schema on by default since 24.06: turned off
    ("26.07-1~bpo13+1", True),
])
def test_with_a_database_ejabberds_own_schema_updater_is_off_where_it_exists(version, pinned_off, monkeypatch):
    monkeypatch.setenv("DBPW", "x" * 20)
    database = {"type": "postgresql", "host": "db1", "password_env": "DBPW"}
    conf = yaml.safe_load(files(inv(ejabberd_version=version, database=database))[EJABBERD_YML].content)
    assert conf["new_sql_schema"] is True
    assert conf.get("update_sql_schema", "absent") == (False if pinned_off else "absent")
