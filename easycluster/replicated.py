"""A replicated PostgreSQL (cluster.database.hosts; docs/database.md): Patroni managing one
primary and its standbys, with etcd as its quorum store on the same hosts, and HAProxy on each
node routing ejabberd to whichever member Patroni says is the primary.

Facts are read over SSH like a node's (replica_probe.sh: packages, easycluster's files, units,
`patronictl list`). Provisioning runs on every member at once (etcd's first start waits for its
peers), then waits for the quorum, a primary and a synchronous standby, then makes the role (its
SCRAM verifier only) and the database on the primary; the standbys get them by replication.
"""

from __future__ import annotations

import json
import time

from .errors import EasyClusterError, RemoteError
from .facts import ReplicaFacts, parse_replica_facts
from .health import replication_gap
from .inventory import Database, Inventory
from .paths import ETCD_DEFAULT, FIREWALL_RULES, FIREWALL_UNIT, PATRONI_CONFIG
from .plan import DB_CREATE, DB_ETCD, DB_FIREWALL, DB_INSTALL, DB_JOIN, DB_PATRONI, DB_ROLE, Step
from .remote import Fleet, Host, at_once, each_at_once
from .scripts import render
from .secrets import Secret

READY_BOUND = 180        # seconds from the members' start to a primary with a synchronous standby
LOOP_WAIT = 5            # Patroni's loop_wait (templates/patroni.yml.j2): a reload is applied within it
# a member's files, by their names in replica_provision.sh's staging directory
STAGED = {ETCD_DEFAULT: "etcd", PATRONI_CONFIG: "patroni", FIREWALL_UNIT: "fw_unit", FIREWALL_RULES: "fw_rules"}


def probe(host: Host, db: Database) -> ReplicaFacts:
    try:
        r = host.script(render("replica_probe", member=host.name, db_name=db.name, db_user=db.user),
                        check=False, timeout=30, what="gathering a database member's facts")
    except RemoteError as exc:
        return ReplicaFacts(host=host.name, error=exc.detail or exc.what)
    return parse_replica_facts(host.name, r.stdout)


def probe_all(fleet: Fleet) -> dict[str, ReplicaFacts]:
    d = fleet.inventory.cluster.database
    results = at_once(fleet.database_hosts(), lambda h: probe(h, d))
    return {h: (r if isinstance(r, ReplicaFacts) else ReplicaFacts(host=h, error=str(r))) for h, r in results.items()}


def leader(state: list[dict]) -> dict | None:
    """The member Patroni lists as the primary (`patronictl list -f json`), if any."""
    return next((m for m in state if str(m.get("Role", "")).lower() == "leader"), None)


def ready(members: list[dict], names: list[str]) -> str | None:
    """None when there is a running primary, a synchronous standby streaming, and every member
    named running or streaming; else what is missing (pure). Members not named (one being
    taken out: its entry lives on in etcd until its lease ends) are not waited for."""
    roles = {m.get("Member"): (str(m.get("Role", "")).lower(), str(m.get("State", "")).lower())
             for m in members if m.get("Member") in names}
    if len(roles) < len(names):
        return f"{len(roles)} of {len(names)} members known to Patroni"
    gap = replication_gap(list(roles.values()))
    if gap:
        return f"no {gap} yet"
    lagging = [m for m, (r, s) in roles.items() if s not in ("running", "streaming")]
    if lagging:
        return f"{', '.join(sorted(lagging))} not streaming yet"
    return None


def provision(fleet: Fleet, inv: Inventory, steps: list[Step], password: Secret, say) -> list[dict]:
    """The members' steps (install, etcd settings, Patroni configuration, start) on every member
    at once; then each member joining a running quorum store (DB_JOIN), one at a time; then the
    wait for a primary with a synchronous standby, then the role and database on the primary
    (DB_ROLE, DB_CREATE among `steps`). Returns Patroni's list once it was ready."""
    hosts = {h.name: h for h in fleet.database_hosts()}
    per_host = {h: [s for s in steps if s.host == h] for h in hosts}
    joining = [s for s in steps if s.action == DB_JOIN]

    def member(h: Host) -> None:
        mine = per_host[h.name]
        actions = {s.action for s in mine}
        staging = h.script(render("staging"), what="making a staging directory").stdout.strip()
        for s in mine:
            if s.file is not None:
                h.put_bytes(s.file.data(), f"{staging}/{STAGED[s.file.path]}")
        h.script(render("replica_provision", staging=staging, install=DB_INSTALL in actions,
                        write_etcd=DB_ETCD in actions, write_patroni=DB_PATRONI in actions,
                        write_firewall=DB_FIREWALL in actions, start=DB_JOIN not in actions),
                 what="provisioning a database member", timeout=900)
    each_at_once([hosts[h] for h in hosts if per_host[h]], member)
    for s in joining:   # etcd takes one new member at a time, each started before the next is added
        r = hosts[s.host].script(render("replica_join", member=s.host, peer_url=s.peer_url,
                                        endpoints=",".join(s.endpoints)),
                                 what="joining the running quorum store (etcd)", timeout=180)
        say(s.host, f"etcd member of {r.stdout.strip().splitlines()[-1]}")
    names = list(hosts)
    state = wait_ready(fleet, names)
    say(leader(state)["Member"], f"primary of {len(names)} members: " + ", ".join(
        f"{m.get('Member')} {str(m.get('Role', '')).lower()}" for m in state if m.get("Member") in names))
    actions = {s.action for s in steps}
    if actions & {DB_ROLE, DB_CREATE}:
        role(fleet, inv, password, DB_ROLE in actions, DB_CREATE in actions)
    return state


def wait_ready(fleet: Fleet, names: list[str], bound: float = READY_BOUND) -> list[dict]:
    """Until Patroni lists a running primary with a synchronous standby (asked on each member in
    turn: any of them may be down); raises after `bound` seconds naming what is missing."""
    deadline = time.monotonic() + bound
    missing = "no answer"
    while time.monotonic() < deadline:
        state = listing(fleet)
        if state is not None:
            missing = ready(state, names) or ""
            if not missing:
                return state
        time.sleep(2)
    raise EasyClusterError(f"the replicated database is not ready after {bound:.0f}s: {missing}")


def listing(fleet: Fleet, skip: str | None = None) -> list[dict] | None:
    """Patroni's list of the members, from the first member that answers (None: none did)."""
    for h in fleet.database_hosts():
        if h.name == skip:
            continue
        try:
            out = h.run(f"timeout 10 patronictl -c {PATRONI_CONFIG} list -f json", check=False, timeout=20,
                        what="listing the replicated database's members").stdout
            return json.loads(out or "[]")
        except (RemoteError, ValueError):
            continue
    return None


def dump_source(fleet: Fleet, avoid: str | None = None) -> Host:
    """Where a pg_dump of the replicated database is taken: a streaming standby (an asynchronous
    one first: the synchronous one's load delays commits), else the primary; not `avoid`."""
    rank = {"replica": 0, "sync standby": 1, "leader": 2}
    usable = [m for m in listing(fleet, skip=avoid) or [] if str(m.get("State", "")).lower() in ("streaming", "running")
              and str(m.get("Role", "")).lower() in rank and m.get("Member") != avoid]
    if not usable:
        raise EasyClusterError("no member of the replicated database answers: nothing to take a pg_dump from")
    best = min(usable, key=lambda m: rank[str(m.get("Role", "")).lower()])
    return next(h for h in fleet.database_hosts() if h.name == best.get("Member"))


def role(fleet: Fleet, inv: Inventory, password: Secret, set_role: bool, create: bool) -> None:
    """The role (its SCRAM verifier) and the database on the primary; every member notes the
    password's hash."""
    from .database import scram_verifier
    d = inv.cluster.database
    verifier = scram_verifier(password)

    def one(h: Host) -> bool:
        staging = h.script(render("staging"), what="making a staging directory").stdout.strip()
        h.put_bytes(verifier.reveal().encode(), f"{staging}/verifier")
        r = h.script(render("replica_role", staging=staging, set_role=set_role, create_database=create,
                            db_name=d.name, db_user=d.user, password_sha256=password.sha256()),
                     what="the role and database on the primary", timeout=60)
        return "primary=yes" in r.stdout
    if not any(each_at_once(fleet.database_hosts(), one).values()):
        raise EasyClusterError("no member was the primary when the role and database were made: run `fab deploy` "
                               "again")


def switchover(fleet: Fleet, leader_name: str, candidate: str, bound: float = READY_BOUND) -> None:
    """The primary `leader_name` hands over to the synchronous standby `candidate`; back once
    Patroni lists the candidate as the running primary."""
    fleet.database_member(candidate).script(render("replica_switchover", leader=leader_name, candidate=candidate),
                                            what="a switchover of the replicated database", timeout=180)
    wait_primary(fleet, candidate, bound, skip=leader_name, why="after the switchover")


def retire(fleet: Fleet, name: str) -> None:
    """The member `name` stopped and emptied (replica_retire.sh): it takes no part any more."""
    fleet.database_member(name).script(render("replica_retire"), what="stopping and emptying a database member", timeout=180)


def forget(fleet: Fleet, member_id: str, survivors: list[str]) -> str:
    """The quorum store forgets the member `member_id` (hexadecimal), asked on the first
    survivor whose etcd answers; the members it lists after, by name."""
    problem: Exception | None = None
    for h in (x for x in fleet.database_hosts() if x.name in survivors):
        try:
            r = h.script(render("replica_forget", member_id=member_id), what="removing an etcd member", timeout=60)
            return r.stdout.strip().splitlines()[-1]
        except RemoteError as exc:
            problem = exc
    raise EasyClusterError(f"no member left could remove etcd member {member_id}: {problem}")


PROMOTE_BOUND = 180  # seconds for Patroni to make the one member left primary: the old leader key's lease
                     # outlives the remade etcd's start (Debian 12's lab: 62 s)


def force_quorum(fleet: Fleet, name: str) -> str:
    """etcd remade as a cluster of `name` alone, from its data (replica_force_quorum.sh)."""
    r = fleet.database_member(name).script(render("replica_force_quorum"), what="remaking the quorum store", timeout=180)
    return r.stdout.strip().splitlines()[-1]


def wait_primary(fleet: Fleet, name: str, bound: float = PROMOTE_BOUND, skip: str | None = None,
                 why: str = "") -> list[dict]:
    """Until Patroni lists `name` as the running primary (asked on the members but `skip`);
    raises after `bound` s, with `why` it should have been."""
    deadline = time.monotonic() + bound
    state: list[dict] = []
    while time.monotonic() < deadline:
        state = listing(fleet, skip=skip) or []
        now = leader(state)
        if now and now.get("Member") == name and str(now.get("State", "")).lower() == "running":
            return state
        time.sleep(1)
    raise EasyClusterError(f"Patroni did not make {name} the running primary within {bound:.0f}s {why}".rstrip())
