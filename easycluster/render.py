"""The files easycluster manages on each host, rendered from templates/ (StrictUndefined)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import jinja2

from .errors import EasyClusterError
from .inventory import USER_TABLES, Inventory, Node
from .paths import (COOKIE_PATH, DIST_TLS_CA, DIST_TLS_CERT, DIST_TLS_KEY, DIST_TLS_OPTFILE, EJABBERD_DEFAULT,
                    EJABBERD_YML, EPMD_DROPIN, FIREWALL_RULES, FIREWALL_UNIT, JOIN_SEED_FILE, MNESIA_SCHEMA_FILE,
                    PG_HBA_BEGIN, PG_HBA_END, PLUGIN_EBIN, SQL_SECRET_FILE, UNIT_DROPIN, UPGRADE_HOLD_FILE,
                    ETCD_CLIENT_PORT, ETCD_DATA, ETCD_DEFAULT, HAPROXY_CFG, METRICS_DIR, NODE_EXPORTER_DEFAULT,
                    NODE_EXPORTER_PORT, PATRONI_CONFIG, etcd_client_url, etcd_peer_url, pg_data_dir)
from .secrets import Secret, load_password
from .tls import NodeTLS

# Package data (the repository's templates/ and plugin/, mapped into the package by the build).
TEMPLATES = resources.files("easycluster.templates")
PLUGIN_SOURCES = resources.files("easycluster.plugin")   # every *.erl there is a module of the plugin
UNIT_START_TIMEOUT = 300   # seconds (the unit's drop-in); a boot join extends it while it works
UNIT_STOP_TIMEOUT = 120


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: str | Secret      # a Secret's content is never shown, diffed or logged
    mode: int
    owner: str
    group: str
    restart: bool              # does a change need a node restart (else a config reload)?
    live: bool = False         # applied in place when written (the firewall): no restart, no reload

    @property
    def secret(self) -> bool:
        return isinstance(self.content, Secret)

    def data(self) -> bytes:
        text = self.content.reveal() if isinstance(self.content, Secret) else self.content
        return text.encode()

    def sha256(self) -> str:
        return hashlib.sha256(self.data()).hexdigest()


def _template_source(name: str) -> str | None:
    source = TEMPLATES / name
    return source.read_text() if source.is_file() else None


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render(template: str, **context) -> str:
    try:
        return _environment().get_template(template).render(**context)
    except jinja2.UndefinedError as exc:
        raise EasyClusterError(f"templates/{template}: {exc.message} (the inventory lacks it)") from None


def managed_files(inventory: Inventory, node: Node, dist_interface: str, cookie: Secret,
                  tls: NodeTLS | None = None, members: list[str] | None = None,
                  sql_password: Secret | None = None, sql_default: bool = True) -> list[ManagedFile]:
    """Everything deploy writes on `node`'s host, in the order it writes it; `tls`: the
    node's distribution certificate, with cluster.distribution.tls; `members`: the addresses
    epmd and the distribution answer (the firewall's; None: no firewall files). With
    cluster.database: `sql_password` (read from its secrets file when not given), and
    `sql_default` False while `fab migrate-to-sql` has the data still in Mnesia."""
    context = dict(cluster=inventory.cluster, node=node, nodes=inventory.nodes, sql_default=sql_default,
                   sql_secret_file=SQL_SECRET_FILE,
                   dist_interface=dist_interface, plugin_ebin=PLUGIN_EBIN, dist_tls_optfile=DIST_TLS_OPTFILE,
                   join_seed_file=JOIN_SEED_FILE, upgrade_hold_file=UPGRADE_HOLD_FILE,
                   mnesia_schema_file=MNESIA_SCHEMA_FILE,
                   ejabberd_release=release(inventory.cluster.ejabberd_version))
    return firewall_files(inventory, node, members) + _tls_files(inventory, node, tls) + _sql_files(
        inventory, sql_password) + _haproxy_files(inventory, node) + exporter_files(inventory, node.host) + [
        ManagedFile(EPMD_DROPIN, render("epmd.socket.d.conf.j2", **context), 0o644, "root", "root", restart=True),
        ManagedFile(UNIT_DROPIN, render("ejabberd.service.d.conf.j2", start_timeout=UNIT_START_TIMEOUT,
                                        stop_timeout=UNIT_STOP_TIMEOUT, **context), 0o644, "root", "root",
                    restart=True),
        ManagedFile(EJABBERD_DEFAULT, render("ejabberd.default.j2", **context), 0o644, "root", "root",
                    restart=True),
        ManagedFile(EJABBERD_YML, render("ejabberd.yml.j2", **context), 0o600, "ejabberd", "ejabberd",
                    restart=False),
    ] + ([ManagedFile(MNESIA_SCHEMA_FILE, render("ejabberd.schema.j2", path=MNESIA_SCHEMA_FILE, tables=USER_TABLES,
                                                 **context), 0o644, "ejabberd", "ejabberd", restart=True)]
         if node.satellite or not inventory.cluster.database else []) + [
        # no trailing newline: the file's sha256 is the cookie's, comparable without reading it
        ManagedFile(COOKIE_PATH, cookie, 0o400, "ejabberd", "ejabberd", restart=True),
    ]


def exporter_files(inventory: Inventory, host: str) -> list[ManagedFile]:
    """With cluster.monitoring: node-exporter's settings on a node or database host (applied by
    restarting node-exporter: no node restart). docs/monitoring.md."""
    if not inventory.cluster.monitoring:
        return []
    text = render("prometheus-node-exporter.default.j2", path=NODE_EXPORTER_DEFAULT, host=host,
                  cluster=inventory.cluster, port=NODE_EXPORTER_PORT, metrics_dir=METRICS_DIR)
    return [ManagedFile(NODE_EXPORTER_DEFAULT, text, 0o644, "root", "root", restart=False, live=True)]


def _haproxy_files(inventory: Inventory, node: Node) -> list[ManagedFile]:
    """With a replicated database: HAProxy's configuration, ejabberd's way to its primary
    (applied in place by a reload: no node restart)."""
    db = inventory.cluster.database
    if not db or not db.replicated:
        return []
    return [ManagedFile(HAPROXY_CFG, render("haproxy.cfg.j2", cluster=inventory.cluster, node=node, database=db),
                        0o644, "root", "root", restart=False, live=True)]


@dataclass(frozen=True)
class Member:
    host: str
    address: str

    @property
    def peer_url(self) -> str:
        return etcd_peer_url(self.address)

    @property
    def client_url(self) -> str:
        return etcd_client_url(self.address)


def replica_files(inv: Inventory, member: Member, members: list[Member], nodes: list[tuple[Node, str]],
                  replication_password: Secret, pg_major: str) -> list[ManagedFile]:
    """A replicated database member's etcd settings, Patroni configuration (a secret: it holds
    the replication role's password) and firewall (its unit, its rules). `nodes`: (node, address)
    pairs pg_hba and the firewall let in."""
    context = dict(cluster=inv.cluster, database=inv.cluster.database, member=member, members=members,
                   nodes=nodes, pg_major=pg_major, etcd_data=ETCD_DATA, etcd_client_port=ETCD_CLIENT_PORT,
                   pg_data=pg_data_dir(pg_major), exporter_port=NODE_EXPORTER_PORT)
    patroni = render("patroni.yml.j2", replication_password=replication_password.reveal(), **context)
    return [ManagedFile(ETCD_DEFAULT, render("etcd.default.j2", **context), 0o644, "root", "root", restart=False),
            ManagedFile(PATRONI_CONFIG, Secret(patroni), 0o600, "postgres", "postgres", restart=False),
            ManagedFile(FIREWALL_UNIT, render("easycluster-firewall-database.service.j2", **context), 0o644, "root",
                        "root", restart=False, live=True),
            ManagedFile(FIREWALL_RULES, render("firewall-database.nft.j2", **context), 0o644, "root", "root",
                        restart=False, live=True)]


def _sql_files(inventory: Inventory, password: Secret | None) -> list[ManagedFile]:
    """The database password, in the file ejabberd.yml includes (written before it)."""
    if not inventory.cluster.database:
        return []
    if password is None:
        password = load_password(inventory.cluster)
    text = render("ejabberd-sql.yml.j2", cluster=inventory.cluster, password=password.reveal())
    # read again by a reload (include_config_file): the pools' new connections log in with it
    return [ManagedFile(SQL_SECRET_FILE, Secret(text), 0o400, "ejabberd", "ejabberd", restart=False)]


def release(version: str) -> tuple[int, int]:
    """ejabberd's release of a Debian package version: "24.12-3~bpo12+1" -> (24, 12). The
    templates compare it where an option differs between releases."""
    head = version.split(":")[-1].split("-")[0].split("~")[0]
    parts = (head.split(".") + ["0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return 0, 0


def firewall_files(inventory: Inventory, node: Node, members: list[str] | None) -> list[ManagedFile]:
    if members is None:
        return []
    context = dict(cluster=inventory.cluster, node=node, members=sorted(set(members), key=_address_key),
                   exporter_port=NODE_EXPORTER_PORT)
    return [ManagedFile(FIREWALL_UNIT, render("easycluster-firewall.service.j2", **context), 0o644, "root", "root",
                        restart=False, live=True),
            ManagedFile(FIREWALL_RULES, render("firewall.nft.j2", **context), 0o644, "root", "root",
                        restart=False, live=True)]


def _address_key(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split(".")) if address.replace(".", "").isdigit() else (999,)


def _tls_files(inventory: Inventory, node: Node, tls: NodeTLS | None) -> list[ManagedFile]:
    """Written before the node file that points at them (a restart then finds them all)."""
    if not inventory.cluster.dist_tls:
        return []
    if tls is None:
        raise EasyClusterError(f"{node.name}: no distribution certificate (cluster.distribution.tls)")
    optfile = render("ssl_dist.conf.j2", ca=DIST_TLS_CA, cert=DIST_TLS_CERT, key=DIST_TLS_KEY)
    return [
        ManagedFile(DIST_TLS_CA, tls.ca_pem, 0o644, "root", "root", restart=True),
        ManagedFile(DIST_TLS_CERT, tls.cert_pem, 0o644, "root", "root", restart=True),
        ManagedFile(DIST_TLS_KEY, tls.key_pem, 0o400, "ejabberd", "ejabberd", restart=True),
        ManagedFile(DIST_TLS_OPTFILE, optfile, 0o644, "root", "root", restart=True),
    ]


def host_files(inv: Inventory, node_addresses: list[tuple[Node, str]], listen: str) -> tuple[str, str]:
    """easycluster's settings file and pg_hba.conf block for the database host (cluster.database
    that easycluster provisions)."""
    db = inv.cluster.database
    conf = render("postgresql.conf.j2", cluster=inv.cluster, database=db, listen=listen)
    hba = render("pg_hba.conf.j2", database=db, nodes=node_addresses, begin=PG_HBA_BEGIN, end=PG_HBA_END)
    return conf, hba


def plugin_sources() -> dict[str, bytes]:
    """The plugin's modules: file name -> source, in name order."""
    return {p.name: p.read_bytes() for p in sorted(PLUGIN_SOURCES.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".erl")}


def plugin_sha256() -> str:
    """Of the sources one after another, as `cat src/*.erl | sha256sum` on a host."""
    return hashlib.sha256(b"".join(plugin_sources().values())).hexdigest()
