"""cluster.database's pure parts: the SCRAM verifier, the .pgpass line, the database host's
facts as parsed from db_probe.sh's output. (The lab tests: test_database.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from easycluster.database import parse_db_facts, pgpass_line, scram_verifier
from easycluster.inventory import Database
from easycluster.secrets import Secret


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
