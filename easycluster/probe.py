"""Gathering the facts: the read-only probe (probe.sh) on each host, one SSH command per host,
all hosts at once; its output parsed into easycluster.facts' HostFacts.
"""

from __future__ import annotations

from .facts import HostFacts, parse_facts
from .inventory import Inventory
from .paths import (DIST_TLS_CA, DIST_TLS_CERT, DIST_TLS_KEY, DIST_TLS_OPTFILE, EJABBERD_DEFAULT, EJABBERD_YML,
                    EPMD_DROPIN, FIREWALL_RULES, FIREWALL_UNIT, MNESIA_SCHEMA_FILE, SQL_SECRET_FILE, UNIT_DROPIN)
from .remote import Fleet, Host
from .scripts import render

READABLE_FILES = (FIREWALL_UNIT, FIREWALL_RULES, EPMD_DROPIN, UNIT_DROPIN, EJABBERD_YML, EJABBERD_DEFAULT, DIST_TLS_CA,
                  DIST_TLS_CERT, DIST_TLS_OPTFILE, MNESIA_SCHEMA_FILE)
SECRET_FILES = (DIST_TLS_KEY, SQL_SECRET_FILE)   # only their hash is read, like the cookie's


def probe_script(inventory: Inventory, host: str, probe_network: bool = True, ctl: str = "self") -> str:
    """ctl: how the node's status is read: "self" (its own ejabberdctl call), "cluster"
    (every member's, from this node) or "none" (read from another node)."""
    node_hosts = [n.node_host for n in inventory.nodes]
    own = inventory.node(host).node_host
    peers = [h for h in node_hosts if h != own] if probe_network else []
    c = inventory.cluster
    ports = [4369] + list(range(c.port_min, c.port_max + 1))
    return render("probe", files=READABLE_FILES, secrets=SECRET_FILES, resolve=node_hosts, peers=peers,
                  ports=ports, ctl_mode=ctl)


def gather_one(host: Host, inventory: Inventory, probe_network: bool = True, ctl: str = "self") -> HostFacts:
    result = host.script(probe_script(inventory, host.name, probe_network, ctl), check=False,
                      timeout=20, what="gathering facts")
    return parse_facts(host.name, result.stdout)


def gather_via(fleet: Fleet, ask: str | None = None, probe_network: bool = False) -> dict[str, HostFacts]:
    """As gather, but with every member's status asked from one node (`ask`, by default the
    first host) in one ejabberdctl call rather than one per host (each boots a VM: ~0.2 s of
    CPU). A host whose VM runs but whose status did not come that way (not a member, not
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
