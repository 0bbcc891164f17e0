"""`fab rotate-cookie`: a new Erlang cookie for a running cluster, without downtime.

A cookie is checked only when a connection is set up, and a node can be told at runtime
which cookie to use towards each peer and which one to expect from everyone else. So,
with the new cookie staged on every host (SFTP, 0400 ejabberd, read by the plugin):

1. `peers`, on every node at once: use the new cookie towards every cluster peer. The
   connections that are up stay up.
2. `self`, on every node: expect the new cookie from unknown nodes, and in the same call
   rename the staged file over the cookie file. ejabberdctl's own hidden node connects
   with the cookie file, so before the call it still presents the old cookie the node
   expects, and after it the new one: every ejabberdctl call connects.
3. Check every node uses the new cookie for itself and every peer; the cluster is healthy.
4. Locally: the new cookie file replaces the old one (os.replace, atomic).

Each step can run again. A rotation that died half-way is finished by running the
command again: the new cookie is kept in `<cookie file>.new` until the end, so the rerun
uses the same one; hosts that already switched accept the same steps again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import probe
from ..errors import EasyClusterError, RemoteError
from ..health import assess
from ..inventory import Inventory
from ..operation import operation
from ..progress import Out, Progress
from ..remote import Fleet, Host
from ..nodectl import ctl_json, remove
from ..paths import COOKIE_STAGING as STAGING   # the plugin reads the new cookie from there
from ..scripts import render
from ..secrets import Secret, generate_cookie, load_cookie, read_cookie_file


@dataclass
class RotationResult:
    rotated_hosts: list[str]
    seconds: float


def pending_path(cookie_file: Path) -> Path:
    return cookie_file.with_name(cookie_file.name + ".new")


def new_cookie(inv: Inventory, new_cookie_file: str | None, say: Out) -> tuple[Secret, Path | None, bool]:
    """The cookie to rotate to; the local file to move over the secrets file at the end (None
    when the cookie comes from an environment variable: the operator updates that); and
    whether that file is still to be written (a new cookie, not one a rotation left pending)."""
    c = inv.cluster
    if c.cookie_env:
        if not new_cookie_file:
            raise EasyClusterError(
                f"the cookie comes from ${c.cookie_env}: give the new one in a file only you can read "
                "(--new-cookie-file PATH, mode 0600), never on the command line")
        return read_cookie_file(Path(new_cookie_file)), None, False
    if new_cookie_file:
        raise EasyClusterError(f"the cookie is kept in {c.cookie_file}: rotate-cookie generates the new one "
                               "itself (--new-cookie-file is for cluster.cookie.env)")
    assert c.cookie_file is not None
    pending = pending_path(c.cookie_file)
    if pending.exists():
        say(f"resuming the rotation started earlier: the new cookie is in {pending}")
        return read_cookie_file(pending), pending, False
    return generate_cookie(), pending, True


def _write_pending(path: Path, cookie: Secret) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(cookie.reveal() + "\n")


def rotate_cookie(inv: Inventory, *, out: Out = print, dry: bool = False, lock_wait: float = 0,
                  new_cookie_file: str | None = None) -> RotationResult:
    old = load_cookie(inv.cluster)
    new, pending, unwritten = new_cookie(inv, new_cookie_file, out)
    if new == old:
        raise EasyClusterError("the new cookie is the cluster's current one")
    with operation(inv, "rotate-cookie", out=out, lock_wait=lock_wait) as op:
        progress = op.progress
        facts = op.look(network=False, via=False)
        effective = op.inv
        fleet = op.fleet.subset(effective)
        hosts = list(fleet.hosts)
        known = {old.sha256(): "old", new.sha256(): "new"}
        strangers = [h for h in hosts if facts[h].reachable and facts[h].cookie_sha256 not in known]
        if strangers:
            raise EasyClusterError(f"{', '.join(strangers)}: the cookie file holds neither the inventory's "
                                   "cookie nor the new one; nothing was changed (`fab deploy --dry` shows more)")
        todo = [h for h in hosts if facts[h].cookie_sha256 != new.sha256()]
        if todo:
            health = assess(effective, facts)
            if not health.healthy:
                raise EasyClusterError("rotate-cookie needs every node running and in the cluster (a node "
                                       "left out would keep the old cookie and be shut out); nothing was "
                                       "changed:\n  " + "\n  ".join(health.problems))
            if op.dry_run(dry, f"would give {', '.join(todo)} the new cookie, without a restart (staged, switched "
                               "on every node at once, the old one then refused)"):
                return RotationResult(todo, 0.0)
            with op.lock(hosts):
                if unwritten:   # kept until the end, so an interrupted rotation resumes with it
                    _write_pending(pending, new)
                with progress.phase("rotate"):
                    _rotate(effective, fleet, new, progress)
        else:
            out("every node already uses the new cookie")
            if dry:
                return RotationResult([], 0.0)
    if pending is not None:
        if pending.exists():
            os.replace(pending, inv.cluster.cookie_file)   # atomic: the old cookie is gone only now
        out(f"{inv.cluster.cookie_file}: now holds the new cookie")
    else:
        out(f"now set ${inv.cluster.cookie_env} to the new cookie (from {new_cookie_file}) wherever it is "
            "kept: until then deploy refuses to run")
    elapsed = time.monotonic() - progress.start
    out(f"cookie rotated on {len(todo)} node(s) in {elapsed:.1f}s; the old cookie no longer connects")
    return RotationResult(todo, elapsed)


def _rotate(inv: Inventory, fleet: Fleet, new: Secret, progress: Progress) -> None:
    try:
        _switch(inv, fleet, new, progress)
    except BaseException:
        # a staged copy left behind is one more copy of the secret (a rerun stages it again)
        fleet.parallel(lambda h: remove(h, STAGING, check=False, timeout=15))
        raise


def _switch(inv: Inventory, fleet: Fleet, new: Secret, progress: Progress) -> None:
    hosts = list(fleet.hosts)
    names = {n.name for n in inv.nodes}

    def stage(h: Host) -> None:
        with progress.step(h.name, "stage the new cookie (SFTP)"):
            h.put_bytes(new.reveal().encode(), STAGING)
            h.script(render("cookie_stage"), what="staging the new cookie")

    def towards_peers(h: Host) -> None:
        with progress.step(h.name, "use it towards every peer"):
            _expect(cookie_phase(h, "peers"), new, names - {inv.node(h.name).name})

    def as_own(h: Host) -> None:
        with progress.step(h.name, "make it the node's own and the cookie file's"):
            cookie_phase(h, "self")

    def check(h: Host) -> None:
        with progress.step(h.name, "check: the node uses only the new cookie"):
            _expect(cookie_phase(h, "check"), new, names - {inv.node(h.name).name}, own=True)

    fleet.each(hosts, stage)
    # All nodes switch their peers' cookie at about the same moment: a link that drops and
    # reconnects in between would meet two different cookies.
    fleet.each(hosts, towards_peers)
    fleet.each(hosts, as_own)
    # a fresh ejabberdctl (new file) answering proves the node and its file agree
    fleet.each(hosts, check)
    final = probe.gather(fleet, probe_network=False)
    health = assess(inv, final)
    if not health.healthy:
        raise EasyClusterError("the cookie was rotated but the cluster is not healthy:\n  "
                               + "\n  ".join(health.problems))


def cookie_phase(h: Host, phase: str) -> dict:
    """The plugin's easy_cluster_cookie PHASE; the cookie itself is read from STAGING."""
    return ctl_json(h, "easy_cluster_cookie", phase, what=f"easy_cluster_cookie {phase}", timeout=60)


def _expect(answer: dict, new: Secret, peers: set[str], own: bool = False) -> dict:
    want = new.sha256()
    seen = answer.get("peers", {})
    wrong = sorted(p for p in peers if seen.get(p) != want)
    if wrong:
        raise RemoteError(answer.get("node", "?"), "peer cookies not switched", ", ".join(wrong))
    if own and answer.get("cookie_sha256") != want:
        raise RemoteError(answer.get("node", "?"), "the node's own cookie is not the new one")
    return answer


