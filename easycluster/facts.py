"""Facts: read-only probes of each host, one SSH command per host, all hosts at once.

The probe script prints `key=value` lines (file contents base64-encoded); parsing
is pure and tested without hosts. The cookie is never read back, only its hash.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from . import releases
from .inventory import Inventory
from .paths import (DIST_TLS_CA, DIST_TLS_CERT, DIST_TLS_KEY, DIST_TLS_OPTFILE, EJABBERD_DEFAULT, EJABBERD_YML,
                    EPMD_DROPIN, FIREWALL_RULES, FIREWALL_UNIT, MNESIA_SCHEMA_FILE, SQL_SECRET_FILE, UNIT_DROPIN)
from .remote import Fleet, Host
from .scripts import render

READABLE_FILES = (FIREWALL_UNIT, FIREWALL_RULES, EPMD_DROPIN, UNIT_DROPIN, EJABBERD_YML, EJABBERD_DEFAULT, DIST_TLS_CA,
                  DIST_TLS_CERT, DIST_TLS_OPTFILE, MNESIA_SCHEMA_FILE)
SECRET_FILES = (DIST_TLS_KEY, SQL_SECRET_FILE)   # only their hash is read, like the cookie's


@dataclass
class HostFacts:
    host: str
    error: str | None = None            # SSH failed: nothing else is known
    os_id: str = ""
    os_version: str = ""
    os_codename: str = ""
    hostname: str = ""
    addresses: list[str] = field(default_factory=list)
    ejabberd_version: str | None = None   # installed package version
    erlang_version: str | None = None
    pgsql_driver: str | None = None      # erlang-p1-pgsql's version (ejabberd's PostgreSQL driver)
    pg_client: bool = False              # PostgreSQL's client tools (pg_dump), for an external database
    systemd: bool = False
    nft: bool = False                   # nftables installed (the firewall of epmd and the distribution)
    unit: dict[str, str] = field(default_factory=dict)   # ejabberd.service: LoadState, ActiveState, ...
    journal: list[str] = field(default_factory=list)     # its last lines, when not active (running)
    beam_node: str | None = None        # the node name the running VM was started with
    files: dict[str, str | None] = field(default_factory=dict)   # path -> content (None: missing)
    cookie_sha256: str | None = None
    secret_sha256: dict[str, str | None] = field(default_factory=dict)   # other secret files: path -> hash
    plugin_sha256: str | None = None
    mnesia_schema: bool = False
    restart_pending: bool = False       # an earlier run changed config and did not restart
    joining: dict | None = None         # a join marker: {"seed", "since"} of a join not yet verified
    stop_order: dict | None = None      # {"order": [node names], "when"} of the last stop-cluster
    departed: dict[str, tuple[str, str]] = field(default_factory=dict)  # node -> (how, when) left on purpose
    resolves: dict[str, str | None] = field(default_factory=dict)
    reach: dict[tuple[str, int], str] = field(default_factory=dict)
    ctl_status: int | None = None       # ejabberdctl status: 0 running, 1 starting, 3 down; None: no ejabberd
    beam_running: bool = False
    cluster_status: dict | None = None  # easy_cluster_status JSON, when the plugin answers
    cluster_statuses: dict | None = None   # every member's, when asked from this node (gather_via)

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def os_release(self) -> str:
        """'Debian 13 (trixie)', or what an unknown release says it is."""
        return releases.describe(self.os_id, self.os_version)

    @property
    def installed(self) -> bool:
        return bool(self.ejabberd_version)

    @property
    def running(self) -> bool:
        return self.ctl_status == 0

    @property
    def unit_state(self) -> str:
        """ejabberd.service as systemctl shows it: 'active (running)', 'failed (exit-code)', ..."""
        u = self.unit
        if not u or u.get("LoadState") != "loaded":
            return "-"
        state = f"{u.get('ActiveState', '?')} ({u.get('SubState', '?')})"
        if u.get("Result") not in (None, "", "success"):
            state += f" result {u['Result']}"
        return state

    @property
    def unit_running(self) -> bool:
        return self.unit.get("ActiveState") == "active" and self.unit.get("SubState") == "running"

    @property
    def restarts(self) -> int:
        try:
            return int(self.unit.get("NRestarts", "0"))
        except ValueError:
            return 0


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


def probe_lines(output: str) -> tuple[list[tuple[str, str]], bool]:
    """A probe script's `key=value` lines, and whether it finished (printed its end=1)."""
    pairs = [(key, value) for key, sep, value in (line.partition("=") for line in output.splitlines()) if sep]
    return [p for p in pairs if p[0] != "end"], ("end", "1") in pairs


def parse_facts(host: str, output: str) -> HostFacts:
    f = HostFacts(host=host)
    pairs, complete = probe_lines(output)
    for key, value in pairs:
        if key.startswith("file:"):
            f.files[key[5:]] = None if value == "-" else base64.b64decode(value).decode(errors="replace")
        elif key.startswith("secret:"):
            f.secret_sha256[key[7:]] = value or None
        elif key.startswith("departed:"):
            how, _, when = value.partition(" ")
            f.departed[key[9:]] = (how, when)
        elif key == "joining":
            try:
                f.joining = json.loads(value)
            except json.JSONDecodeError:
                f.joining = {"seed": None}
        elif key == "stop_order":
            try:
                f.stop_order = json.loads(value)
            except json.JSONDecodeError:
                f.stop_order = None
        elif key.startswith("resolve:"):
            f.resolves[key[8:]] = value or None
        elif key.startswith("reach:"):
            _, peer, port = key.split(":")
            f.reach[(peer, int(port))] = value
        elif key == "unit":
            f.unit = dict(kv.split("=", 1) for kv in value.split() if "=" in kv)
        elif key == "journal":
            f.journal = base64.b64decode(value).decode(errors="replace").splitlines() if value else []
        elif key == "beam_node":
            f.beam_node = value or None
        elif key == "addresses":
            f.addresses = value.split()
        elif key in ("ejabberd_version", "erlang_version", "pgsql_driver", "cookie_sha256", "plugin_sha256"):
            setattr(f, key, value or None)
        elif key in ("os_id", "os_version", "os_codename", "hostname"):
            setattr(f, key, value)
        elif key in ("systemd", "nft", "pg_client", "mnesia_schema", "beam_running", "restart_pending"):
            setattr(f, key, value == "yes")
        elif key == "ctl_status":
            f.ctl_status = int(value)
        elif key == "cluster_statuses":
            try:
                f.cluster_statuses = json.loads(value).get("statuses")
            except (json.JSONDecodeError, AttributeError):
                f.cluster_statuses = None
        elif key == "cluster_status":
            try:
                f.cluster_status = json.loads(value)
            except json.JSONDecodeError:
                f.cluster_status = None
    if not complete:
        f.error = "fact probe did not finish"
    return f


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
