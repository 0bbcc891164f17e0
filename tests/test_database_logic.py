"""cluster.database's pure parts: the SCRAM verifier, the .pgpass line, the database host's
facts as parsed from db_probe.sh's output, the password's secrets file. (The lab tests:
test_database.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat

import pytest
import yaml

from easycluster.database import pgpass_line, scram_verifier
from easycluster.errors import EasyClusterError
from easycluster.facts import EtcdMember, parse_db_facts
from easycluster.inventory import Database, parse_inventory
from easycluster.secrets import PASSWORD_ALPHABET, PASSWORD_LENGTH, Secret, load_password


def test_the_scram_verifier_is_postgresqls_for_that_password_and_salt():
    """RFC 5802/7677, as PostgreSQL stores it: SCRAM-SHA-256$iter:salt$StoredKey:ServerKey."""
    salt, password = b"0123456789abcdef", "pw:with$odd chars"
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    got = scram_verifier(Secret(password), salt=salt)
    assert isinstance(got, Secret) and password not in got.reveal()
    assert got.reveal() == f"SCRAM-SHA-256$4096:{b64(salt)}${b64(stored)}:{b64(server)}"
    assert scram_verifier(Secret(password)).reveal() != scram_verifier(Secret(password)).reveal()   # salted


@pytest.mark.parametrize("password, line", [
    ("plain", "pg:5432:ejabberd:ejabberd:plain\n"),
    ("a:b", "pg:5432:ejabberd:ejabberd:a\\:b\n"),
    ("back\\slash", "pg:5432:ejabberd:ejabberd:back\\\\slash\n"),
])
def test_the_pgpass_line_escapes_what_libpq_reads_specially(password, line):
    db = Database("postgresql", None, "pg", 5432, "ejabberd", "ejabberd", None, "PW")
    assert pgpass_line(db, Secret(password)) == line


def test_database_host_facts_are_parsed():
    conf = base64.b64encode(b"listen_addresses = 'localhost,10.0.0.9'\n").decode()
    out = "\n".join(["os_id=debian", "os_version=13", "systemd=yes", "addresses=10.0.0.9 172.17.0.1", "resolve=10.0.0.9",
                     "postgresql=15+248", "cluster=15/main", "online=yes", f"conf={conf}", "hba=",
                     "role=1", "database=ejabberd", "password_sha256=abc", "end=1"])
    f = parse_db_facts("db1", out)
    assert f.reachable and f.systemd and f.online and f.role and (f.os_id, f.os_version) == ("debian", "13")
    assert (f.resolve, f.postgresql, f.cluster, f.owner, f.password_sha256) == (
        "10.0.0.9", "15+248", "15/main", "ejabberd", "abc")
    assert f.conf == "listen_addresses = 'localhost,10.0.0.9'\n" and f.hba == ""
    bare = parse_db_facts("db1", "os_id=debian\nsystemd=yes\npostgresql=\nconf=-\nrole=\ndatabase=\nend=1")
    assert (bare.postgresql, bare.conf, bare.role, bare.owner) == (None, None, False, None)
    assert parse_db_facts("db1", "os_id=debian").error == "fact probe did not finish"


# --------------------------------------------------------------------------- the password (secrets.load_password)

def _cluster(tmp_path, database: dict | None):
    cluster = {"name": "c", "ejabberd_version": "23.01-1", "domains": ["c.test"], "cookie": {"env": "COOKIE"}}
    text = yaml.safe_dump({"cluster": cluster | ({"database": database} if database else {}),
                           "nodes": [{"host": "n1"}]})
    return parse_inventory(text, tmp_path / "inventory.yml").cluster


def test_the_password_file_is_made_once_0600_and_read_back(tmp_path):
    path = tmp_path / "secrets" / "db.password"
    cluster = _cluster(tmp_path, {"type": "postgresql", "host": "db1", "password_file": str(path)})
    with pytest.raises(EasyClusterError, match="does not exist .the first `fab deploy` creates it"):
        load_password(cluster)
    dry = load_password(cluster, create=True, dry=True)      # a dry run makes nothing
    assert isinstance(dry, Secret) and not path.exists()
    made = load_password(cluster, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(made.reveal()) == PASSWORD_LENGTH and set(made.reveal()) <= set(PASSWORD_ALPHABET)
    assert load_password(cluster) == made == load_password(cluster, create=True, dry=True) != dry
    path.chmod(0o644)
    with pytest.raises(EasyClusterError, match=r"password_file .* is readable by others \(mode 0644\): chmod 600"):
        load_password(cluster)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(EasyClusterError, match="is empty"):
        load_password(cluster)


def test_the_password_of_an_existing_server_is_never_made(tmp_path, monkeypatch):
    path = tmp_path / "db.password"
    external = {"host": "pg.example", "password_file": str(path)}
    cluster = _cluster(tmp_path, {"type": "postgresql", "external": external})
    for create, dry in ((False, False), (True, False), (True, True)):
        with pytest.raises(EasyClusterError, match="the existing server's role password"):
            load_password(cluster, create=create, dry=dry)
    assert not path.exists()
    cluster = _cluster(tmp_path, {"type": "postgresql", "external": {"host": "pg.example", "password_env": "DBPW"}})
    monkeypatch.delenv("DBPW", raising=False)
    with pytest.raises(EasyClusterError, match="environment variable DBPW is not set"):
        load_password(cluster)
    monkeypatch.setenv("DBPW", "s3cret")
    assert load_password(cluster, create=True, dry=True).reveal() == "s3cret"


def test_no_database_no_password(tmp_path):
    cluster = _cluster(tmp_path, None)
    assert load_password(cluster, create=True) is None


# replica_probe.sh's answer -> the fields that matter (a member of cluster.database.hosts)
REPLICA_PROBES = [
    ("a primary, configured and running",
     "os_id=debian\nos_version=13\nsystemd=yes\naddresses=10.0.0.4 fe80::1\nresolve=10.0.0.4\n"
     "pkg_postgresql=17+278\npkg_patroni=4.0.7-3\npkg_etcd-server=3.5.16-4\npkg_python3-etcd=0.4.5-6\n"
     "pkg_nftables=1.1.3-1\ndebian_clusters=\n"
     f"etcd_conf={base64.b64encode(b'ETCD_NAME=db1 # easycluster').decode()}\n"
     f"file:/etc/easycluster/firewall.nft={base64.b64encode(b'table inet easycluster').decode()}\n"
     "file:/etc/systemd/system/easycluster-firewall.service=-\npatroni_sha256=ab12\n"
     "etcd_active=active\npatroni_active=active\n"
     'members=[{"Member": "db1", "Role": "Leader", "State": "running"}]\n'
     "primary=yes\nrole=1\ndatabase=ejabberd\npassword_sha256=cd34\nend=1",
     {"installed": True, "primary": True, "role": True, "owner": "ejabberd", "etcd_active": True,
      "patroni_active": True, "resolve": "10.0.0.4", "addresses": ["10.0.0.4", "fe80::1"], "error": None,
      "etcd_conf": "ETCD_NAME=db1 # easycluster", "patroni_sha256": "ab12", "password_sha256": "cd34",
      "files": {"/etc/easycluster/firewall.nft": "table inet easycluster",
                "/etc/systemd/system/easycluster-firewall.service": None},
      "members": [{"Member": "db1", "Role": "Leader", "State": "running"}], "debian_clusters": []}),
    ("a new Debian server: nothing installed, Debian's own cluster",
     "os_id=debian\nos_version=13\nsystemd=yes\npkg_postgresql=\npkg_patroni=\ndebian_clusters=17/main \n"
     "etcd_conf=-\npatroni_sha256=\netcd_active=inactive\npatroni_active=inactive\nmembers=not json\nend=1",
     {"installed": False, "primary": False, "role": False, "etcd_conf": None, "patroni_sha256": None,
      "etcd_active": False, "members": [], "debian_clusters": ["17/main"], "error": None}),
    ("cut off mid-answer", "os_id=debian\n", {"error": "fact probe did not finish", "reachable": False}),
    ("etcd's members: one added, never started (no name yet)",
     'os_id=debian\netcd_data=yes\netcd_members={"header": {"cluster_id": 1}, "members": [{"ID": 10377742939133412063, '
     '"name": "db1", "peerURLs": ["http://10.0.0.4:2380"], "clientURLs": ["http://10.0.0.4:2379"]}, {"ID": 255, '
     '"peerURLs": ["http://10.0.0.7:2380"]}]}\nend=1',
     {"etcd_data": True, "etcd_members": [EtcdMember(10377742939133412063, "db1", ("http://10.0.0.4:2380",)),
                                          EtcdMember(255, "", ("http://10.0.0.7:2380",))]}),
    ("etcd not answering, or a package's etcd of its own (no easycluster data)",
     "os_id=debian\netcd_data=no\nend=1", {"etcd_data": False, "etcd_members": []}),
    ("etcd's answer garbled", "os_id=debian\netcd_data=yes\netcd_members={\"members\": 3}\nend=1",
     {"etcd_data": True, "etcd_members": []}),
]


@pytest.mark.parametrize("output, expected", [c[1:] for c in REPLICA_PROBES], ids=[c[0] for c in REPLICA_PROBES])
def test_a_database_members_probe_is_parsed(output, expected):
    assert EtcdMember(10377742939133412063, "db1").hex_id == "90052638315d82df"   # as etcdctl takes it
    from easycluster.facts import parse_replica_facts
    f = parse_replica_facts("db1", output)
    for key, value in expected.items():
        assert getattr(f, key) == value, key


# facts.etcd_strangers: members of etcd that are none of the listed hosts (status and deploy both ask)
STRANGER_CASES = [
    ("every member listed", [(1, "db1", "10.0.0.1"), (2, "db2", "10.0.0.2")], []),
    ("a member no longer listed", [(1, "db1", "10.0.0.1"), (3, "db9", "10.0.0.9")], ["db9"]),
    ("an interrupted join: added, never started, a listed host's URL", [(1, "db1", "10.0.0.1"), (4, "", "10.0.0.2")],
     []),
    ("added, never started, nobody's URL", [(1, "db1", "10.0.0.1"), (5, "", "10.0.0.7")], ["5"]),
]


@pytest.mark.parametrize("quorum, strangers", [c[1:] for c in STRANGER_CASES], ids=[c[0] for c in STRANGER_CASES])
def test_a_member_of_etcd_the_inventory_does_not_list_is_a_stranger(quorum, strangers):
    from easycluster.facts import etcd_strangers
    members = [EtcdMember(i, name, (f"http://{addr}:2380",)) for i, name, addr in quorum]
    found = etcd_strangers(members, {"db1": "10.0.0.1", "db2": "10.0.0.2", "db3": None})
    assert [m.name or m.hex_id for m in found] == strangers
