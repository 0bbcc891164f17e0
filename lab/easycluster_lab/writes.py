"""A stream of in-band registrations across a fault: the write that the replicated database's
failover touches (an account is stored in PostgreSQL before ejabberd acknowledges it).

Used by tests/test_replicated.py and load/run.py (LOAD_DATABASE=replicated). Each registration
is either acknowledged (ejabberd answered success) or failed (refused or timed out: it may or
may not be stored); an acknowledged one missing from the database afterwards is lost.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from easycluster import xmpp


@dataclass
class Outcome:
    """What one fault did to the registrations: how long until every node registered again,
    how many failed meanwhile, how many were acknowledged, and (once checked) lost."""
    what: str
    back: dict[str, float]          # node -> seconds from the fault to its first registration after
    failed: int
    acked: int
    lost: int | None = None

    @property
    def recovered(self) -> float:
        return max(self.back.values())

    def line(self) -> str:
        return (f"{self.what}: registrations back on every node after {self.recovered:.1f}s (per node: "
                f"{', '.join(f'{n} {t:.1f}s' for n, t in self.back.items())}); {self.failed} failed meanwhile, "
                f"{self.acked} acknowledged" + ("" if self.lost is None else f", {self.lost} lost"))


class Registrations:
    """In-band registrations through `nodes` in turn (`address(node)`: where to connect), one
    after another, for as long as it runs, each user named `prefix` + a number."""

    def __init__(self, address: Callable[[str], str], nodes: list[str], domain: str, password: str, prefix: str,
                 bound: float = 90):
        self.address, self.nodes, self.domain, self.password, self.prefix = address, nodes, domain, password, prefix
        self.bound = bound
        self.acked: list[tuple[str, str, float]] = []     # (user, node, when)
        self.failed: list[tuple[str, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            user, node = f"{self.prefix}{i}", self.nodes[i % len(self.nodes)]
            try:
                xmpp.register(self.address(node), f"{user}@{self.domain}", self.password)
                self.acked.append((user, node, time.monotonic()))
            except Exception:      # refused or timed out: not acknowledged, may or may not be stored
                self.failed.append((user, node, time.monotonic()))
            i += 1

    def across(self, fault: Callable[[], object], what: str) -> Outcome:
        """Registrations for 3 s, then `fault()`, then until every node has registered again
        (at most `bound` s) and 2 s more; raises AssertionError when a node did not."""
        self._thread.start()
        try:
            time.sleep(3)
            cut = time.monotonic()
            fault()
            deadline = cut + self.bound
            while time.monotonic() < deadline and not all(
                    any(n == node and t > cut + 1 for _, n, t in self.acked) for node in self.nodes):
                time.sleep(1)
            time.sleep(2)
        finally:
            self._stop.set()
            self._thread.join(60)
        back = {node: min((t for _, n, t in self.acked if n == node and t > cut + 1), default=None)
                for node in self.nodes}
        missing = [n for n, t in back.items() if t is None]
        assert not missing, f"{what}: registrations did not work again within {self.bound:.0f}s on {missing}"
        outcome = Outcome(what, {n: t - cut for n, t in back.items()},
                          len([1 for _, _, t in self.failed if t > cut]), len(self.acked))
        print(outcome.line(), flush=True)
        return outcome

    def lost(self, stored: set[str]) -> list[str]:
        """The acknowledged registrations not among `stored` (the usernames the database holds)."""
        return [u for u, _, _ in self.acked if u not in stored]
