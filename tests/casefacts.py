"""A host's facts from a case's shorthand: the builder the case tables share (tests/cases/plan/,
tests/cases/refusals/). No host is contacted.

A host starts from a `state` (host_facts):

- `new`: a new Debian server, reachable, resolving every node, nothing installed;
- `converged`: a running master whose files, cookie and plugin match the inventory it was
  deployed with; its `cluster_status` is every node's (all running, every table copied on
  each) unless given: `cluster_status: {db_nodes: [...]}` derives the rest from it;
- `stopped`: converged, then stopped (no VM, no status, its Mnesia data kept);
- `package`: what `apt-get install ejabberd` leaves: the package's node running as ejabberd@localhost.

then any HostFacts field by its name. The i-th node of an inventory is at 10.9.0.(11+i).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from easycluster.facts import HostFacts
from easycluster.inventory import Inventory
from easycluster.paths import COOKIE_PATH, EJABBERD_DEFAULT, EJABBERD_YML
from easycluster.render import managed_files
from easycluster.secrets import Secret

INVENTORY_PATH = Path("/inv/t.yml")   # where every case's inventory is said to be
COOKIE = Secret("C" * 40)      # the cookie of every case: a `converged` host has it
DB_PASSWORD = Secret("P" * 40)  # cluster.database's password in every case (a `ready` database host has it)
PLUGIN_SHA = "p" * 64          # the plugin every case deploys: a `converged` host has it
ERLANG = "1:25.2.3"
TABLES = {"passwd": "disc_only_copies", "roster": "disc_only_copies", "session": "ram_copies"}


def address(inv: Inventory, host: str) -> str:
    """Where each host of a case is: the i-th node of the inventory at 10.9.0.(11+i)."""
    return f"10.9.0.{11 + [n.host for n in inv.nodes].index(host)}"


def fresh(inv: Inventory, host: str) -> HostFacts:
    """state: new -- a new Debian server: reachable, resolving every node, nothing installed."""
    c = inv.cluster
    ports = [4369] + list(range(c.port_min, c.port_max + 1))
    return HostFacts(host=host, os_id="debian", os_version="12", hostname=host, addresses=[address(inv, host)],
                     systemd=True, nft=True, files={EJABBERD_YML: None, EJABBERD_DEFAULT: None},
                     resolves={n.node_host: address(inv, n.host) for n in inv.nodes},
                     reach={(n.node_host, p): "refused" for n in inv.nodes if n.host != host for p in ports})


def status(inv: Inventory, host: str, **fields) -> dict:
    """easy_cluster_status of a running node in its role: in a cluster of `db_nodes` (default:
    every node of the inventory), all running, every table copied on each master, a satellite
    holding the RAM tables only and its schema in RAM; `fields` change any of it."""
    db_nodes = fields.get("db_nodes", [n.name for n in inv.nodes])
    satellites = {n.name for n in inv.nodes if n.satellite}
    me = inv.node(host)
    tables = {t: {n: typ for n in db_nodes if n not in satellites or typ == "ram_copies"}
              for t, typ in TABLES.items()}
    tables["schema"] = {n: "ram_copies" if n in satellites else "disc_copies" for n in db_nodes}
    st = {"node": me.name, "db_nodes": list(db_nodes), "running_db_nodes": list(db_nodes),
          "master": not me.satellite, "schema": "ram_copies" if me.satellite else "disc_copies",
          "missing_tables": [t for t, typ in TABLES.items() if me.satellite and typ != "ram_copies"],
          "sessions": 0, "registered_users": 0, "tables": tables, "started_at": 1}
    st.update(fields)
    return st


def holding(f: HostFacts, files) -> HostFacts:
    """`f` as the probe reads a host holding `files` (managed files): the cookie's and other
    secrets' hashes, every other file's content."""
    for mf in files:
        if mf.path == COOKIE_PATH:
            f.cookie_sha256 = mf.sha256()
        elif mf.secret:
            f.secret_sha256[mf.path] = mf.sha256()
        else:
            f.files[mf.path] = mf.data().decode()
    return f


def converged(inv: Inventory, host: str, **status_fields) -> HostFacts:
    """state: converged -- a running master whose files, cookie and plugin all match `inv`."""
    f = fresh(inv, host)
    f.ejabberd_version, f.erlang_version = inv.cluster.ejabberd_version, ERLANG
    f.pgsql_driver = "1.1.20-1" if inv.cluster.database else None
    f.pg_client = f.haproxy = bool(inv.cluster.database and inv.cluster.database.replicated)
    members = [address(inv, n.host) for n in inv.nodes]
    holding(f, managed_files(inv, inv.node(host), address(inv, host), COOKIE, members=members,
                             sql_password=DB_PASSWORD if inv.cluster.database else None))
    f.plugin_sha256 = PLUGIN_SHA
    f.ctl_status, f.beam_running, f.mnesia_schema = 0, True, not inv.node(host).satellite
    f.cluster_status = status(inv, host, **status_fields)
    return f


def stopped(f: HostFacts) -> HostFacts:
    """state: stopped -- as converged, then stopped: no VM, no status, its Mnesia data kept."""
    f = copy.deepcopy(f)
    f.ctl_status, f.beam_running, f.cluster_status = 3, False, None
    return f


def package_started(inv: Inventory, host: str) -> HostFacts:
    """state: package -- what `apt-get install ejabberd` leaves on a server: the package's node
    running as ejabberd@localhost with its own cookie and files, no plugin."""
    f = fresh(inv, host)
    f.ejabberd_version, f.erlang_version = inv.cluster.ejabberd_version, ERLANG
    f.files[EJABBERD_DEFAULT] = "#ERLANG_NODE=ejabberd@localhost\n"
    f.cookie_sha256, f.mnesia_schema = "0" * 64, True
    f.ctl_status, f.beam_running, f.beam_node = 0, True, "ejabberd@localhost"
    return f


FIELDS = {f.name for f in dataclasses.fields(HostFacts)}


def host_facts(inv: Inventory, deployed: Inventory, host: str, spec: dict) -> HostFacts:
    """One host of a case's `facts:`: `state` (new, converged, stopped, package), then any
    HostFacts field by name. Mappings (files, resolves, reach, unit, cluster_status...) are
    merged into the state's, other fields replaced; `reach` keys are `peer:port` or `peer:*`
    (every probed port)."""
    spec = dict(spec)
    state = spec.pop("state", None)
    status_fields = spec.pop("cluster_status", {}) if state in ("converged", "stopped") else {}
    if state == "new":
        f = fresh(inv, host)
    elif state == "converged":
        f = converged(deployed, host, **status_fields)
    elif state == "stopped":
        assert not status_fields, f"{host}: a stopped host has no cluster_status"
        f = stopped(converged(deployed, host))
    elif state == "package":
        f = package_started(inv, host)
    else:
        raise AssertionError(f"{host}: state must be new, converged, stopped or package, not {state!r}")
    unknown = set(spec) - FIELDS
    assert not unknown, f"{host}: not fields of HostFacts: {', '.join(sorted(unknown))}"
    for key, value in spec.items():
        if key == "reach":
            value = _reach(f, value)
        current = getattr(f, key)
        if isinstance(current, dict) and isinstance(value, dict):
            current.update(value)
        else:
            setattr(f, key, value)
    return f


def _reach(f: HostFacts, given: dict) -> dict:
    out = {}
    for key, result in given.items():
        peer, _, port = str(key).rpartition(":")
        ports = [p for (h, p) in f.reach if h == peer] if port == "*" else [int(port)]
        assert ports, f"{f.host}: no probed port of {peer}"
        out.update({(peer, p): result for p in ports})
    return out
