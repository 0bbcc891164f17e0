"""The cluster lock: one membership change at a time, whoever starts it and from where.

The lock is a directory made with `mkdir` (atomic) on every reachable cluster host, taken
in inventory order: two runs racing for it meet on the first host and exactly one wins.
It names its holder, so a refusal can say who holds it and since when; a holder that died
leaves it behind, and `fab break-lock` removes it deliberately.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import time
from datetime import datetime, timezone

from .errors import LockHeld, RemoteError
from .remote import Fleet, Host
from .scripts import render


def describe_holder(holder: dict) -> str:
    if not holder:
        return "the cluster is locked (holder unknown: the lock is being taken or was left half-made)"
    since = holder.get("since", "?")
    age = ""
    try:
        secs = time.time() - datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
        age = f", {int(secs)}s ago"
    except ValueError:
        pass
    text = (f"the cluster is locked by {holder.get('user')}@{holder.get('machine')} "
            f"(pid {holder.get('pid')}, `fab {holder.get('operation')}`) since {since}{age}")
    if holder.get("machine") == socket.gethostname() and not _alive(holder.get("pid")):
        text += "; that process is gone: the lock is stale"
    return text


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class ClusterLock:
    def __init__(self, fleet: Fleet, hosts: list[str], operation: str, wait: float = 0):
        self.fleet, self.hosts, self.wait = fleet, hosts, wait
        self.holder = {
            "token": secrets.token_hex(8), "user": getpass.getuser(), "machine": socket.gethostname(),
            "pid": os.getpid(), "operation": operation,
            "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.taken: list[Host] = []

    def __enter__(self) -> "ClusterLock":
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self._try_all()
                return self
            except LockHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1)

    def __exit__(self, *exc) -> None:
        self.release()

    def _try_all(self) -> None:
        """The first host decides between racing runs (exactly one gets it); the others are
        then taken all at once. Any of them held: give back what was taken, name the holder."""
        first, rest = self.hosts[:1], self.hosts[1:]
        for group in (first, rest):
            results = self.fleet.parallel(self._take, group)
            self.taken += [self.fleet[h] for h in group if results[h] is None]
            for h in group:
                if results[h] is not None:
                    self.release()
                    if isinstance(results[h], Exception):
                        raise results[h]
                    raise LockHeld(h, results[h], describe_holder(results[h]))

    def _take(self, host: Host) -> dict | None:
        """None if taken here, else the holder's record."""
        r = host.script(render("lock_take", holder=json.dumps(self.holder)), what="taking the cluster lock")
        lines = r.stdout.strip().splitlines()
        return None if lines and lines[0] == "acquired" else _parse(lines[1:])

    def release(self) -> None:
        def give_back(host: Host) -> None:
            try:
                host.script(render("lock_release", token=self.holder["token"]), check=False, timeout=15)
            except RemoteError:
                pass   # a host cut off keeps its lock; the next run reports it, break-lock clears it
        self.fleet.parallel(give_back, [h.name for h in self.taken])
        self.taken = []


def _parse(lines: list[str]) -> dict:
    try:
        return json.loads("\n".join(lines)) if lines else {}
    except json.JSONDecodeError:
        return {}


def break_lock(fleet: Fleet, hosts: list[str]) -> list[tuple[str, dict]]:
    """Remove the lock wherever it is; return (host, holder) of each lock removed."""
    def one(host: Host):
        r = host.script(render("lock_break"), check=False, timeout=15)
        lines = r.stdout.strip().splitlines()
        return _parse(lines[:-1]) if lines and lines[-1] == "removed" else None
    results = fleet.parallel(one, hosts)
    return [(h, holder) for h, holder in results.items() if isinstance(holder, dict)]
