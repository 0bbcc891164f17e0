"""cluster.database: PostgreSQL holding the cluster's persistent data (docs/database.md).

Two kinds of facts (their model: easycluster.facts). A database host easycluster provisions is probed over SSH like a node
(db_probe.sh: package, settings, pg_hba lines, role, database). And the database itself is
asked from each node, through that node's own SSH connection (an SSH channel the node's
sshd opens to the server: the node's address, its route, pg_hba's view of it), with
pg8000: before anything is installed on a node, the preflight knows whether it can log in.
The password goes to PostgreSQL only as a SCRAM verifier, to the nodes only as a 0400 file.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets as _random
import socket

import pg8000.native
import scramp

from .errors import RemoteError, SqlError
from .facts import DbHostFacts, SqlFacts, parse_db_facts
from .inventory import Database, Inventory
from .paths import PG_CONF_NAME, PG_HBA_BEGIN, PG_HBA_END
from .plan import DB_CONF, DB_CREATE, DB_HBA, DB_INSTALL, DB_ROLE
from .remote import Fleet, Host
from .secrets import Secret
from .scripts import render as render_script
from .sql import SchemaStep

# paramiko logs a refused channel itself ("Secsh channel 0 open FAILED"): connect() reports it
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)

CONNECT_TIMEOUT = 10
# easycluster's mark in the database: which cluster's data it holds, and since when. Made in
# the transaction that loads ejabberd's schema, so a database holds both or neither.
MARKER_TABLE = "easycluster_cluster"
# ejabberd's schema (new_sql_schema: every table has server_host), from the installed package
SCHEMA_FILE = "/usr/share/ejabberd/sql/pg.new.sql"


# --------------------------------------------------------------------------- the password (secrets.load_password)

def scram_verifier(password: Secret, salt: bytes | None = None, iterations: int = 4096) -> Secret:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (its rolpassword format): given to
    ALTER ROLE instead of the password, which then never reaches the database host."""
    salt, stored, server, iterations = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        password.reveal(), iteration_count=iterations, salt=salt or _random.token_bytes(16))
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return Secret(f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}")


# --------------------------------------------------------------------------- the database host's facts

def db_probe(host: Host, db: Database) -> DbHostFacts:
    try:
        result = host.script(render_script("db_probe", server=db.server, db_name=db.name, db_user=db.user,
                                           pg_conf_name=PG_CONF_NAME, pg_hba_begin=PG_HBA_BEGIN,
                                           pg_hba_end=PG_HBA_END),
                             check=False, timeout=20, what="gathering the database host's facts")
    except RemoteError as exc:
        return DbHostFacts(host=host.name, error=exc.detail or exc.what)
    return parse_db_facts(host.name, result.stdout)


# --------------------------------------------------------------------------- the database, from a node

class _ChannelSocket:
    """A paramiko channel as pg8000 uses a socket (makefile, close, settimeout)."""

    def __init__(self, channel):
        self._channel = channel

    def makefile(self, mode: str = "rwb"):
        return self._channel.makefile(mode)

    def settimeout(self, seconds):
        self._channel.settimeout(seconds)

    def close(self) -> None:
        self._channel.close()

    def __getattr__(self, name):
        return getattr(self._channel, name)


def connect(host: Host, db: Database, password: Secret, timeout: float = CONNECT_TIMEOUT) -> pg8000.native.Connection:
    """A session with the database, opened from `host` (its sshd connects to the server)."""
    transport = host.transport()
    try:
        channel = transport.open_channel("direct-tcpip", (db.server, db.port), ("127.0.0.1", 0), timeout=timeout)
    except Exception as exc:   # paramiko's ChannelException carries the node's own errno text
        reason = getattr(exc, "text", None) or str(exc) or type(exc).__name__
        raise SqlError(f"cannot reach {db.server}:{db.port} from {host.name} ({reason})") from None
    channel.settimeout(timeout + 20)
    try:
        return pg8000.native.Connection(db.user, database=db.name, password=password.reveal(),
                                        sock=_ChannelSocket(channel), ssl_context=False, timeout=timeout,
                                        application_name="easycluster")
    except pg8000.native.DatabaseError as exc:
        raise SqlError(f"{db.server}:{db.port} refused {db.user} from {host.name}: {server_says(exc)}") from None
    except (pg8000.native.InterfaceError, socket.error, EOFError) as exc:
        raise SqlError(f"{db.server}:{db.port} from {host.name}: {exc}") from None


def server_says(exc: Exception) -> str:
    """The server's own message in a pg8000 DatabaseError (its fields: M is the message)."""
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return str(info.get("M", exc)).strip()


def sql_facts(host: Host, db: Database, password: Secret) -> SqlFacts:
    try:
        conn = connect(host, db, password)
    except SqlError as exc:
        return SqlFacts(host=host.name, error=str(exc))
    try:
        (version, size, marker_table, users_table), = conn.run(
            "SELECT current_setting('server_version'), pg_database_size(current_database()),"
            " to_regclass(:m) IS NOT NULL, to_regclass('users') IS NOT NULL", m=MARKER_TABLE)
        marker, migration = conn.run(f"SELECT name, migration FROM {MARKER_TABLE} LIMIT 1")[0] if marker_table \
            else (None, None)
        users = conn.run("SELECT count(*) FROM users")[0][0] if users_table else None
        return SqlFacts(host.name, None, version, size, marker, users_table, users, migration)
    except pg8000.native.DatabaseError as exc:
        return SqlFacts(host=host.name, error=f"{db.where}: {server_says(exc)}")
    finally:
        conn.close()


def sql_everywhere(fleet: Fleet, password: Secret, db: Database | None = None) -> dict[str, SqlFacts]:
    """The database as each node sees it (logged in from there, over its SSH connection); `db`:
    where it is, if not where the inventory says (a replicated database's primary, directly)."""
    d = db or fleet.inventory.cluster.database
    results = fleet.parallel(lambda h: sql_facts(h, d, password))
    return {h: (r if isinstance(r, SqlFacts) else SqlFacts(host=h, error=str(r)))
            for h, r in results.items()}


def load_schema(host: Host, db: Database, password: Secret, cluster: str, schema: str) -> None:
    """ejabberd's schema and easycluster's mark, in one transaction: both or neither."""
    conn = connect(host, db, password)
    try:
        conn.run("BEGIN")
        conn.execute_simple(schema)
        conn.run(f"CREATE TABLE {MARKER_TABLE} (name text PRIMARY KEY, schema text NOT NULL,"
                 " created timestamptz NOT NULL DEFAULT now(), migration text)")
        conn.run(f"INSERT INTO {MARKER_TABLE} (name, schema) VALUES (:n, :s)", n=cluster,
                 s=hashlib.sha256(schema.encode()).hexdigest())
        conn.run("COMMIT")
    except pg8000.native.DatabaseError as exc:
        raise SqlError(f"loading ejabberd's schema into {db.where} failed: {server_says(exc)}") from None
    finally:
        conn.close()


def schema_steps_present(host: Host, db: Database, password: Secret, steps: list[SchemaStep]) -> list[str]:
    """The labels of `steps` the database has (their `applied` queries), asked from `host`."""
    conn = connect(host, db, password)
    try:
        return [step.label for step in steps if conn.run(step.applied)[0][0]]
    except pg8000.native.DatabaseError as exc:
        raise SqlError(f"reading the schema of {db.where}: {server_says(exc)}") from None
    finally:
        conn.close()


def apply_schema_steps(host: Host, db: Database, password: Secret, steps: list[SchemaStep]) -> tuple[list[str], list[str]]:
    """ejabberd's schema steps (easycluster.sql), in one transaction: all or none; a step the
    database has already (its `applied` query) is skipped. (applied, skipped): their labels."""
    conn = connect(host, db, password)
    applied, skipped = [], []
    try:
        conn.run("BEGIN")
        for step in steps:
            if conn.run(step.applied)[0][0]:
                skipped.append(step.label)
                continue
            try:
                conn.execute_simple(step.sql)
            except pg8000.native.DatabaseError as exc:
                raise SqlError(f"ejabberd {step.label}'s schema step failed in {db.where}: {server_says(exc)} "
                               "(rolled back: the database is as it was)") from None
            applied.append(step.label)
        conn.run("COMMIT")
    except pg8000.native.DatabaseError as exc:
        raise SqlError(f"the schema steps in {db.where}: {server_says(exc)} (rolled back)") from None
    finally:
        conn.close()
    return applied, skipped


# --------------------------------------------------------------------------- migrate-to-sql

# What the migration compares: a Mnesia table and the SQL table its records become, one row
# each (ejabberd's export: ejd2sql). Tables whose records split or merge (privacy lists,
# pubsub items and states, motd) are exported but not counted.
COUNTED = (("passwd", "users"), ("roster", "rosterusers"), ("offline_msg", "spool"), ("vcard", "vcard"),
           ("private_storage", "private_storage"), ("last_activity", "last"), ("muc_room", "muc_room"),
           ("muc_registered", "muc_registered"), ("sr_group", "sr_group"), ("roster_version", "roster_version"),
           ("archive_msg", "archive"))


def set_migration(conn: pg8000.native.Connection, state: str | None) -> None:
    conn.run(f"UPDATE {MARKER_TABLE} SET migration = :s", s=state)


def clear_data(conn: pg8000.native.Connection) -> list[str]:
    """Every table of ejabberd's emptied (not easycluster's mark): a migration that had not
    switched any node yet starts its export again from a clean database."""
    tables = [r[0] for r in conn.run("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                     " AND tablename <> :m ORDER BY tablename", m=MARKER_TABLE)]
    if tables:
        conn.run("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY")
    return tables


def after_export(conn: pg8000.native.Connection, domains: tuple[str, ...]) -> None:
    """What ejabberd 23.01's export leaves to fix: identifiers written explicitly (pubsub
    nodes, privacy lists) without advancing their sequences, and room archives exported once
    per MUC service and once more for the vhost, under the service's name rather than the
    vhost's (where the archive looks for them)."""
    for table, column, sequence in (("pubsub_node", "nodeid", "pubsub_node_nodeid_seq"),
                                    ("privacy_list", "id", "privacy_list_id_seq")):
        conn.run(f"SELECT setval('{sequence}', COALESCE((SELECT max({column}) FROM {table}), 0) + 1, false)")
    conn.run("DELETE FROM archive a USING archive b WHERE a.id > b.id AND a.username = b.username"
             " AND a.timestamp = b.timestamp AND a.peer = b.peer AND a.xml = b.xml")
    for domain in domains:
        conn.run("UPDATE archive SET server_host = :d WHERE server_host LIKE :like AND NOT server_host = ANY(:all)",
                 d=domain, like=f"%.{domain}", all=list(domains))


def sql_counts(conn: pg8000.native.Connection) -> dict[str, int]:
    return {sql: conn.run(f"SELECT count(*) FROM {sql}")[0][0] for _, sql in COUNTED}


# --------------------------------------------------------------------------- the database host (render.host_files)

def provision(host: Host, inv: Inventory, actions: set[str], password: Secret | None,
              conf: str | None = None, hba: str | None = None) -> None:
    """The database host's steps (DB_INSTALL ... DB_CREATE among `actions`) in one script:
    easycluster's settings file `conf` and pg_hba block `hba` (what the plan rendered) and the
    role's SCRAM verifier go by SFTP to a staging directory the script removes."""
    d = inv.cluster.database
    staging = host.script(render_script("staging"), what="making a staging directory").stdout.strip()
    if DB_CONF in actions:
        host.put_bytes(conf.encode(), f"{staging}/conf")
    if DB_HBA in actions:
        host.put_bytes(hba.encode(), f"{staging}/hba")
    if DB_ROLE in actions:
        host.put_bytes(scram_verifier(password).reveal().encode(), f"{staging}/verifier")
    host.script(render_script("db_provision", staging=staging, install=DB_INSTALL in actions,
                              write_conf=DB_CONF in actions, write_hba=DB_HBA in actions,
                              set_role=DB_ROLE in actions, create_database=DB_CREATE in actions,
                              db_name=d.name, db_user=d.user, password_sha256=password.sha256() if password else "-",
                              pg_conf_name=PG_CONF_NAME, pg_hba_begin=PG_HBA_BEGIN, pg_hba_end=PG_HBA_END),
                what="provisioning PostgreSQL", timeout=600)


def pgpass_line(db: Database, password: Secret) -> str:
    """The password as a .pgpass line (PostgreSQL's client tools read it from a file, never
    from their command line): ':' and '\\' escaped."""
    escape = lambda v: str(v).replace("\\", "\\\\").replace(":", "\\:")  # noqa: E731
    return ":".join(escape(v) for v in (db.server, db.port, db.name, db.user, password.reveal())) + "\n"

