"""Inventory parsing and validation: table-driven, no hosts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from easycluster.errors import InventoryError
from easycluster.inventory import parse_inventory, load_inventory

PATH = Path("/srv/inv/prod.yml")

GOOD = {
    "cluster": {
        "name": "xmpp-prod", "ejabberd_version": "23.01-1", "domains": ["example.com"],
        "admins": ["ops@example.com"], "cookie": {"file": "../secrets/prod.cookie"},
    },
    "ssh": {"config": "ssh_config", "user": "root"},
    "nodes": [{"host": "xmpp1.example.com"}, {"host": "xmpp2.example.com"}, {"host": "xmpp3.example.com"}],
}


def variant(path: str, value, base=GOOD) -> str:
    """GOOD with the value at a dotted path replaced (value DELETE removes the key)."""
    import copy
    data = copy.deepcopy(base)
    *parents, last = path.split(".")
    target = data
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    if value is DELETE:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return yaml.safe_dump(data)


DELETE = object()


def variant_data(path: str, value, base=GOOD) -> dict:
    """As variant, as data (a base for another variant)."""
    return yaml.safe_load(variant(path, value, base))


def test_a_good_inventory_parses_with_defaults():
    inv = parse_inventory(yaml.safe_dump(GOOD), PATH)
    assert [n.name for n in inv.nodes] == ["ejabberd@xmpp1", "ejabberd@xmpp2", "ejabberd@xmpp3"]
    assert [n.host for n in inv.nodes] == ["xmpp1.example.com", "xmpp2.example.com", "xmpp3.example.com"]
    c = inv.cluster
    assert (c.c2s_port, c.s2s_port, c.http_port, c.port_min, c.port_max) == (5222, 5269, 5280, 4370, 4379)
    assert c.cookie_file == Path("/srv/inv/../secrets/prod.cookie")
    assert inv.ssh_config == Path("/srv/inv/ssh_config")
    assert c.loglevel == "info" and c.in_band_registration is False


def test_node_overrides_are_kept():
    text = variant("nodes", [{"host": "10.0.0.5", "name": "ejabberd@xmpp9", "dist_interface": "10.0.0.5"}])
    node = parse_inventory(text, PATH).nodes[0]
    assert (node.host, node.name, node.dist_interface, node.node_host) == (
        "10.0.0.5", "ejabberd@xmpp9", "10.0.0.5", "xmpp9")


BAD = [
    # (case, inventory text, expected fragment of the message)
    ("yaml syntax", "cluster: [unclosed\n", "YAML syntax error: line"),
    ("not a mapping", "- just\n- a list\n", "(top level): must be a mapping"),
    ("nested 5,000 deep", "cluster: " + "[" * 5000 + "]" * 5000 + "\n", "(top level): nested too deeply"),
    ("nested 5,000 deep mapping", "nodes:\n- host: a\n  name: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
     "(top level): nested too deeply"),
    ("unknown top key", variant("clusterr", {}), "clusterr: unknown key (did you mean 'cluster'?)"),
    ("unknown cluster key", variant("cluster.domain", ["x.com"]), "cluster.domain: unknown key (did you mean 'domains'?)"),
    ("missing domains", variant("cluster.domains", DELETE), "cluster.domains: missing (required)"),
    ("empty domains", variant("cluster.domains", []), "cluster.domains: needs at least one XMPP domain"),
    ("bad domain", variant("cluster.domains", ["exa mple.com"]), "cluster.domains[0]: 'exa mple.com' is not a valid domain"),
    ("missing version", variant("cluster.ejabberd_version", DELETE), "cluster.ejabberd_version: missing"),
    ("version not debian", variant("cluster.ejabberd_version", "latest"), "is not a Debian package version"),
    ("version a number", variant("cluster.ejabberd_version", 23.01), "cluster.ejabberd_version: must be a string, not a number"),
    ("bad cluster name", variant("cluster.name", "Prod XMPP"), "cluster.name: 'Prod XMPP'"),
    ("admin not a jid", variant("cluster.admins", ["ops"]), "cluster.admins[0]: 'ops' is not a bare JID"),
    ("admin other domain", variant("cluster.admins", ["ops@other.org"]), "is not in one of cluster.domains"),
    ("bad loglevel", variant("cluster.loglevel", "loud"), "cluster.loglevel: 'loud'"),
    ("reversed window", variant("cluster.distribution", {"port_min": 4400, "port_max": 4370}), "is empty (port_min > port_max)"),
    ("one-port window", variant("cluster.distribution", {"port_min": 4390, "port_max": 4390}), "is one port: the node and each ejabberdctl"),
    ("window on epmd", variant("cluster.distribution", {"port_min": 4360, "port_max": 4380}), "contains epmd's port 4369"),
    ("window on c2s", variant("cluster.distribution", {"port_min": 5220, "port_max": 5230}), "overlaps listener port(s) [5222]"),
    ("ticktime too short", variant("cluster.distribution", {"net_ticktime": 1}), "cluster.distribution.net_ticktime: 1: seconds from 5 to 600"),
    ("port out of range", variant("cluster.listen", {"c2s": 70000}), "cluster.listen.c2s: 70000 is not a TCP port"),
    ("no cookie source", variant("cluster.cookie", {}), "set exactly one of `file`"),
    ("two cookie sources", variant("cluster.cookie", {"file": "a", "env": "B"}), "set exactly one of `file`"),
    ("cookie env name", variant("cluster.cookie", {"env": "my-cookie"}), "is not an environment variable name"),
    ("relative certfile", variant("cluster.certfiles", ["certs/a.pem"]), "cluster.certfiles[0]: 'certs/a.pem' is not an absolute path"),
    ("unknown role", variant("nodes.1.role", "replica"), "nodes[1].role: 'replica': master (a disc copy of every table) or satellite (none)"),
    ("satellite first", variant("nodes.0.role", "satellite"), "nodes[0].role: satellite: the first node seeds a new cluster and must be a master"),
    ("archive with satellites", variant("nodes.1.role", "satellite", variant_data("cluster.mam", True)),
     "cluster.mam: the archive (mod_mam) needs a local copy of its table on every node, and a satellite holds none"),
    ("registration timeout word", variant("cluster.registration_timeout", "never"),
     "cluster.registration_timeout: 'never': seconds (0 or more) or \"infinity\""),
    ("registration timeout negative", variant("cluster.registration_timeout", -1), "cluster.registration_timeout: -1"),
    ("offline limit zero", variant("cluster.offline_limit", 0),
     "cluster.offline_limit: 0: messages kept per offline user, 1 to 100000"),
    ("offline limit a word", variant("cluster.offline_limit", "many"), "cluster.offline_limit"),
    ("storage not mnesia's", variant("cluster.storage", "ram_copies"),
     "cluster.storage: 'ram_copies': one of disc_only_copies, disc_copies"),
    ("storage in memory with a database", variant("cluster.storage", "disc_copies", variant_data(
        "cluster.database", {"type": "postgresql", "host": "db1", "password_env": "DBPW"})),
     "cluster.storage: disc_copies: the users' tables are in cluster.database"),
    ("keep no backups", variant("cluster.backups", {"keep": 0}), "cluster.backups.keep: 0: keep at least 1 backup"),
    ("backups typo", variant("cluster.backups", {"kep": 3}), "cluster.backups.kep: unknown key (did you mean 'keep'?)"),
    ("no nodes", variant("nodes", []), "nodes: needs at least one node"),
    ("node without host", variant("nodes", [{"name": "ejabberd@a"}]), "nodes[0].host: missing (required)"),
    ("unknown node key", variant("nodes", [{"host": "a", "hots": "b"}]), "nodes[0].hots: unknown key (did you mean 'host'?)"),
    ("duplicate host", variant("nodes", [{"host": "a"}, {"host": "a", "name": "ejabberd@b"}]), "nodes[1].host: host 'a' is also nodes[0]'s"),
    ("duplicate node name", variant("nodes", [{"host": "a.x.org"}, {"host": "a.y.org"}]), "nodes[1].name: node name 'ejabberd@a'"),
    ("ip host, no name", variant("nodes", [{"host": "10.0.0.1"}]), "node names must use host names"),
    ("ip node name", variant("nodes", [{"host": "a", "name": "ejabberd@10.0.0.1"}]), "uses an IP address"),
    ("bad node name char", variant("nodes", [{"host": "a", "name": "ejab berd@a"}]), "is not an Erlang node name"),
    ("mixed short and long", variant("nodes", [{"host": "a", "name": "ejabberd@a"}, {"host": "b", "name": "ejabberd@b.example.com"}]),
     "mixes short and long node names"),
    ("dist_interface not ip", variant("nodes", [{"host": "a", "dist_interface": "eth0"}]), "'eth0' is not an IPv4 address"),
    ("database type", variant("cluster.database", {"type": "mysql", "host": "db1"}),
     "cluster.database.type: 'mysql': one of postgresql"),
    ("database without host", variant("cluster.database", {"type": "postgresql"}),
     "cluster.database: set exactly one of `host` (a host easycluster provisions with PostgreSQL), `hosts`"),
    ("database hosts and host", variant("cluster.database", {"type": "postgresql", "host": "db1",
                                                             "hosts": ["db1", "db2", "db3"]}),
     "cluster.database: set exactly one of `host`"),
    ("database hosts, two", variant("cluster.database", {"type": "postgresql", "hosts": ["db1", "db2"]}),
     "cluster.database.hosts: 2 hosts: at least 3"),
    ("database hosts, twice", variant("cluster.database", {"type": "postgresql", "hosts": ["db1", "db2", "db1"]}),
     "cluster.database.hosts: lists a host twice"),
    ("database hosts, not a name", variant("cluster.database", {"type": "postgresql", "hosts": ["db1", "d b", "x"]}),
     "cluster.database.hosts: 'd b' is not a host name or address"),
    ("database hosts with address", variant("cluster.database", {"type": "postgresql", "address": "10.0.0.1",
                                                                 "hosts": ["db1", "db2", "db3"]}),
     "cluster.database.address: not with `hosts`"),
    ("database hosts, a node", variant("cluster.database", {"type": "postgresql", "hosts": ["db1", "xmpp2.example.com", "db3"]}),
     "cluster.database.hosts: 'xmpp2.example.com' is a node"),
    ("database host and external", variant("cluster.database", {"type": "postgresql", "host": "db1",
                                                                "external": {"host": "db2"}}),
     "cluster.database: set exactly one of `host`"),
    ("database host is a node", variant("cluster.database", {"type": "postgresql", "host": "xmpp2.example.com"}),
     "cluster.database.host: 'xmpp2.example.com' is a node: the database needs a host of its own"),
    ("database bad name", variant("cluster.database", {"type": "postgresql", "host": "db1", "name": "ejab-berd"}),
     "cluster.database.name: 'ejab-berd': use lowercase letters, digits and '_'"),
    ("database typo", variant("cluster.database", {"type": "postgresql", "host": "db1", "pasword_file": "x"}),
     "cluster.database.pasword_file: unknown key (did you mean 'password_file'?)"),
    ("external without password", variant("cluster.database", {"type": "postgresql", "external": {"host": "db9"}}),
     "cluster.database.external: set exactly one of `password_file` (a local secrets file) or `password_env`"),
    ("external bad port", variant("cluster.database", {"type": "postgresql", "external": {
        "host": "db9", "port": 70000, "password_env": "DB_PW"}}), "cluster.database.external.port: 70000 is not a TCP port"),
    ("external keys outside", variant("cluster.database", {"type": "postgresql", "user": "x", "external": {
        "host": "db9", "password_env": "DB_PW"}}), "cluster.database.user: goes under cluster.database.external"),
    ("external bad env", variant("cluster.database", {"type": "postgresql", "external": {
        "host": "db9", "password_env": "db-pw"}}), "cluster.database.external.password_env: 'db-pw' is not an environment"),
    ("monitoring without host", variant("cluster.monitoring", {"alert_after": 30, "address": "10.0.0.9"}),
     "cluster.monitoring.host: missing (required)"),
    ("monitoring without address", variant("cluster.monitoring", {"host": "mon1"}),
     "cluster.monitoring.address: missing (required)"),
    ("monitoring on a node", variant("cluster.monitoring", {"host": "xmpp3.example.com", "address": "10.0.0.3"}),
     "cluster.monitoring.host: 'xmpp3.example.com' is a node or a database host"),
    ("monitoring on a database host", variant("cluster.monitoring", {"host": "db2", "address": "10.0.0.12"}, variant_data(
        "cluster.database", {"type": "postgresql", "hosts": ["db1", "db2", "db3"]})),
     "cluster.monitoring.host: 'db2' is a node or a database host"),
    ("monitoring bad address", variant("cluster.monitoring", {"host": "mon1", "address": "mon1.lan"}),
     "cluster.monitoring.address: 'mon1.lan' is not an IPv4 address"),
    ("monitoring alert_after too short", variant("cluster.monitoring", {"host": "mon1", "address": "10.0.0.9", "alert_after": 2}),
     "cluster.monitoring.alert_after: 2: seconds from 5 to 3600"),
    ("monitoring alert before a scrape", variant("cluster.monitoring", {"host": "mon1", "address": "10.0.0.9", "alert_after": 10,
                                                                        "scrape_interval": 30}),
     "cluster.monitoring.alert_after: 10 s is shorter than scrape_interval (30 s)"),
    ("monitoring e-mail without relay", variant("cluster.monitoring", {"host": "mon1", "address": "10.0.0.9", "email": {
        "to": ["ops@example.com"], "from": "alerts@example.com"}}), "cluster.monitoring.email.smarthost: missing"),
    ("monitoring e-mail bad address", variant("cluster.monitoring", {"host": "mon1", "address": "10.0.0.9", "email": {
        "to": ["ops"], "from": "alerts@example.com", "smarthost": "mail:587"}}),
     "cluster.monitoring.email.to[0]: 'ops' is not an e-mail address"),
    ("monitoring relay without port", variant("cluster.monitoring", {"host": "mon1", "address": "10.0.0.9", "email": {
        "to": ["ops@example.com"], "from": "alerts@example.com", "smarthost": "mail.example.com"}}),
     "cluster.monitoring.email.smarthost: 'mail.example.com': the mail relay as host:port"),
    ("monitoring webhook not a URL", variant("cluster.monitoring", {"host": "mon1", "address": "10.0.0.9", "webhooks": ["hooks.example.com"]}),
     "cluster.monitoring.webhooks[0]: 'hooks.example.com' is not an http(s) URL"),
    ("monitoring typo", variant("cluster.monitoring", {"host": "mon1", "address": "10.0.0.9", "webhook": []}),
     "cluster.monitoring.webhook: unknown key (did you mean 'webhooks'?)"),
    ("managed with cookie env", variant("cluster.database", {"type": "postgresql", "host": "db1"},
                                        variant_data("cluster.cookie", {"env": "COOKIE"})),
     "cluster.database.password_file: required with cookie.env"),
]


def test_database_defaults_managed_and_external():
    inv = parse_inventory(variant("cluster.database", {"type": "postgresql", "host": "db1.example.com"}), PATH)
    db = inv.cluster.database
    assert (db.managed, db.managed_host, db.server, db.port, db.name, db.user) == (
        True, "db1.example.com", "db1.example.com", 5432, "ejabberd", "ejabberd")
    assert db.password_file == Path("/srv/inv/../secrets/xmpp-prod-database.password") and db.password_env is None
    inv = parse_inventory(variant("cluster.database", {"type": "postgresql", "host": "db1", "address": "10.0.0.9"}), PATH)
    assert inv.cluster.database.server == "10.0.0.9"
    inv = parse_inventory(variant("cluster.database", {"type": "postgresql", "external": {
        "host": "pg.corp", "port": 6432, "name": "xmpp", "user": "xmpp", "password_file": "pw"}}), PATH)
    db = inv.cluster.database
    assert (db.managed, db.server, db.port, db.name, db.user, db.password_file) == (
        False, "pg.corp", 6432, "xmpp", "xmpp", Path("/srv/inv/pw"))
    assert parse_inventory(yaml.safe_dump(GOOD), PATH).cluster.database is None


def test_a_replicated_database_is_reached_through_each_nodes_loopback():
    inv = parse_inventory(variant("cluster.database", {"type": "postgresql", "hosts": ["db1", "db2", "db3"]}), PATH)
    db = inv.cluster.database
    assert (db.managed, db.replicated, db.provisioned, db.hosts) == (False, True, True, ("db1", "db2", "db3"))
    assert (db.server, db.port, db.name, db.user) == ("127.0.0.1", 5433, "ejabberd", "ejabberd")
    assert db.password_file == Path("/srv/inv/../secrets/xmpp-prod-database.password")


def test_monitoring_defaults_and_receivers():
    inv = parse_inventory(variant("cluster.monitoring", {"host": "mon1", "address": "10.0.0.9"}), PATH)
    m = inv.cluster.monitoring
    assert (m.host, m.address, m.alert_after, m.scrape_interval, m.email_to, m.webhooks) == (
        "mon1", "10.0.0.9", 60, 15, (), ())
    inv = parse_inventory(variant("cluster.monitoring", {
        "host": "mon1", "address": "10.0.0.9", "alert_after": 15, "scrape_interval": 5,
        "email": {"to": ["ops@example.com"], "from": "alerts@example.com", "smarthost": "mail.example.com:587"},
        "webhooks": ["https://hooks.example.com/x"]}), PATH)
    m = inv.cluster.monitoring
    assert (m.address, m.alert_after, m.scrape_interval, m.email_to, m.email_from, m.smarthost, m.webhooks) == (
        "10.0.0.9", 15, 5, ("ops@example.com",), "alerts@example.com", "mail.example.com:587",
        ("https://hooks.example.com/x",))
    assert parse_inventory(yaml.safe_dump(GOOD), PATH).cluster.monitoring is None


def test_satellites_may_archive_when_the_archive_is_in_sql():
    base = variant_data("cluster.database", {"type": "postgresql", "host": "db1"}, variant_data("cluster.mam", True))
    inv = parse_inventory(variant("nodes.1.role", "satellite", base), PATH)
    assert inv.satellites and inv.cluster.mam


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in BAD], ids=[c for c, _, _ in BAD])
def test_bad_input_is_refused_naming_file_and_key(text, expected):
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, PATH)
    message = str(err.value)
    assert expected in message
    assert f"{PATH}: " in message


def test_all_problems_are_reported_at_once():
    text = variant("cluster.loglevel", "loud", base=yaml.safe_load(variant("nodes", [{"host": "a", "x": 1}])))
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, PATH)
    assert len(err.value.problems) == 2


def test_missing_file_says_how_to_get_one(tmp_path):
    with pytest.raises(Exception) as err:
        load_inventory(tmp_path / "nope.yml")
    assert "nope.yml not found" in str(err.value)


def test_example_inventory_is_valid():
    inv = load_inventory(Path(__file__).parent.parent / "inventory" / "example.yml")
    assert len(inv.nodes) == 3 and inv.cluster.domains == ("example.com", "conference.example.com")
