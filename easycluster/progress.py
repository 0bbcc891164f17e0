"""Progress lines for operators: `[host] what: ok (1.2s)`, and phase timings for the summary.

    with progress.phase("start"):              # timed, listed in the summary's `time:` line
        with progress.step(h.name, "start"):   # [lab1] start: ok (1.2s) / start: FAILED after 1.2s
            nodectl.start(h, c2s)
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from .errors import EasyClusterError, RemoteError, StepFailed

Out = Callable[[str], None]


class Progress:
    """Per-host prefixed progress lines with timings; records how long each phase took."""

    def __init__(self, out: Out):
        self.out = out
        self._lock = threading.Lock()
        self.start = time.monotonic()
        self.phases: list[tuple[str, float]] = []

    def say(self, host: str, message: str) -> None:
        with self._lock:
            self.out(f"[{host}] {message}")

    @contextmanager
    def step(self, host: str, what: str) -> Iterator[None]:
        """One step on one host: `[host] what: ok (1.2s)` when the block ends, `FAILED after`
        when it raises; a remote failure becomes StepFailed naming host, step and cause."""
        t0 = time.monotonic()
        try:
            yield
        except RemoteError as exc:
            self.say(host, f"{what}: FAILED after {time.monotonic() - t0:.1f}s")
            raise StepFailed(host, what, exc.detail or exc.what) from None
        except EasyClusterError:
            self.say(host, f"{what}: FAILED after {time.monotonic() - t0:.1f}s")
            raise
        self.say(host, f"{what}: ok ({time.monotonic() - t0:.1f}s)")

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """A timed part of the run (its time is recorded whether it succeeds or not)."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.phases.append((name, time.monotonic() - t0))


def count(n: int, noun: str) -> str:
    """`1 member`, `3 members`: a count in the operator's output, singular or plural."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
