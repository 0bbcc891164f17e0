"""Gathering the facts: the read-only probe (probe.sh) on each host, one SSH command per host,
all hosts at once; its output parsed into easycluster.facts' HostFacts. With cluster.database,
the database as each node sees it, alongside. And the cluster's health from them (observe,
wait_for): what every command looks at before and after it changes anything.
"""

from __future__ import annotations

import secrets as _random
import time
from typing import Callable

from . import database as dbmod, replicated
from .errors import EasyClusterError
from .facts import HostFacts, parse_facts
from .health import ClusterHealth, assess, departed, without_departed
from .inventory import Inventory
from .plan import DbView
from .secrets import Secret, load_password, load_replication_password
from .paths import (DIST_TLS_CA, DIST_TLS_CERT, DIST_TLS_KEY, DIST_TLS_OPTFILE, EJABBERD_DEFAULT, EJABBERD_YML,
                    EPMD_DROPIN, FIREWALL_RULES, FIREWALL_UNIT, HAPROXY_CFG, MNESIA_SCHEMA_FILE, NODE_EXPORTER_DEFAULT,
                    SQL_SECRET_FILE,
                    UNIT_DROPIN)
from .remote import Background, Fleet, Host
from .scripts import render

READABLE_FILES = (FIREWALL_UNIT, FIREWALL_RULES, EPMD_DROPIN, UNIT_DROPIN, EJABBERD_YML, EJABBERD_DEFAULT, DIST_TLS_CA,
                  DIST_TLS_CERT, DIST_TLS_OPTFILE, MNESIA_SCHEMA_FILE, HAPROXY_CFG, NODE_EXPORTER_DEFAULT)
SECRET_FILES = (DIST_TLS_KEY, SQL_SECRET_FILE)   # only their hash is read, like the cookie's
# how long a TCP connection to a peer may take to be answered or refused before its probe says
# timeout (a firewall dropping it); every probe of a host runs at once
PROBE_SECONDS = 5


def probe_script(inventory: Inventory, host: str, probe_network: bool = True, ctl: str = "self") -> str:
    """ctl: how the node's status is read: "self" (its own ejabberdctl call), "cluster"
    (every member's, from this node) or "none" (read from another node)."""
    node_hosts = [n.node_host for n in inventory.nodes]
    own = inventory.node(host).node_host
    peers = [h for h in node_hosts if h != own] if probe_network else []
    c = inventory.cluster
    ports = [4369] + list(range(c.port_min, c.port_max + 1))
    return render("probe", files=READABLE_FILES, secrets=SECRET_FILES, resolve=node_hosts, peers=peers,
                  ports=ports, ctl_mode=ctl, probe_seconds=PROBE_SECONDS)


def gather_one(host: Host, inventory: Inventory, probe_network: bool = True, ctl: str = "self") -> HostFacts:
    result = host.script(probe_script(inventory, host.name, probe_network, ctl), check=False,
                      timeout=20, what="gathering facts")
    return parse_facts(host.name, result.stdout)


def gather_via(fleet: Fleet, ask: str | None = None, probe_network: bool = False) -> dict[str, HostFacts]:
    """As gather, but with every member's status asked from one node (`ask`, by default the
    first host) in one call (ec_ctl) rather than one per host: one node's rpc to its peers
    instead of a call into each (and, over TLS, one ejabberdctl VM instead of several, ~0.2 s of
    CPU each). A host whose VM runs but whose status did not come that way (not a member, not
    answering, or `ask` itself not running) is asked on its own, as gather does."""
    hosts = list(fleet.hosts)
    ask = ask or hosts[0]
    results = fleet.parallel(lambda h: gather_one(h, fleet.inventory, probe_network,
                                                  "cluster" if h.name == ask else "none"), hosts)
    facts = {h: (r if isinstance(r, HostFacts) else HostFacts(host=h, error=str(r))) for h, r in results.items()}
    statuses = (facts[ask].cluster_statuses or {}) if ask in facts else {}
    again = []
    for h, f in facts.items():
        st = statuses.get(fleet.inventory.node(h).name)
        if f.error or not f.beam_running:
            continue
        if isinstance(st, dict) and "error" not in st:
            f.ctl_status, f.cluster_status = 0, st
        else:
            again.append(h)
    if again:
        facts.update(gather(fleet, again, probe_network=probe_network))
    return facts


def gather(fleet: Fleet, hosts: list[str] | None = None, probe_network: bool = True) -> dict[str, HostFacts]:
    """Facts of every host, in parallel; an unreachable host gets facts with .error set."""
    results = fleet.parallel(lambda h: gather_one(h, fleet.inventory, probe_network), hosts)
    return {h: (r if isinstance(r, HostFacts) else HostFacts(host=h, error=str(r))) for h, r in results.items()}


def gather_all(fleet: Fleet, password: Secret | None, probe_network: bool = True
               ) -> tuple[dict[str, HostFacts], DbView | None]:
    """Every node's facts and, with cluster.database, the database host's and the database as
    each node sees it: all at once."""
    d = fleet.inventory.cluster.database
    if d is None or password is None:
        return gather_via(fleet, probe_network=probe_network), None

    def database() -> dict:
        return {"host": dbmod.db_probe(fleet.database_host(), d) if d.managed else None,
                "replicas": replicated.probe_all(fleet) if d.replicated else {},
                "sql": dbmod.sql_everywhere(fleet, password)}
    worker = Background(database)
    facts = gather_via(fleet, probe_network=probe_network)
    box = worker.result()
    # the replication password: deploy made its file before looking (a dry run's first look
    # has none: a random one, which no member has, so the plan shows Patroni's file written)
    replication = (load_replication_password(fleet.inventory.cluster) if d.replication_file.exists()
                   else Secret(_random.token_hex(20))) if d.replicated else None
    return facts, DbView(box["host"], box["sql"], password, replicas=box["replicas"], replication=replication)


def observe(inv: Inventory, fleet: Fleet) -> ClusterHealth:
    """The cluster as its nodes report it now, read in parallel over the fleet's connections.
    Nodes removed or forgotten on purpose are listed as departed, not as failures."""
    sql = replicas = None
    d = inv.cluster.database
    if d:   # the database as each node sees it (and a replicated one's members), alongside the nodes' facts
        password = load_password(inv.cluster)
        worker = Background(lambda: dbmod.sql_everywhere(fleet, password))
        members = Background(lambda: replicated.probe_all(fleet)) if d.replicated else None
    facts = gather(fleet, probe_network=False)
    if d:
        sql = worker.result()
        replicas = members.result() if members else None
    gone = departed(facts)
    effective = without_departed(inv, facts, lambda _line: None)
    health = assess(effective, facts, sql, replicas)
    health.departed = {n.name: gone[n.name] for n in inv.nodes if n.name in gone}
    return health


def wait_for(inv: Inventory, fleet: Fleet, ready: Callable[[ClusterHealth], bool], bound: float,
             what: str, interval: float = 1.0) -> ClusterHealth:
    """Watch the cluster until ready(health) holds; after `bound` seconds raise, naming what
    is still wrong."""
    deadline = time.monotonic() + bound
    while True:
        health = observe(inv, fleet)
        if ready(health):
            return health
        if time.monotonic() > deadline:
            raise EasyClusterError(f"not {what} within {bound:.0f}s:\n  " + "\n  ".join(health.problems or ["?"]))
        time.sleep(interval)
