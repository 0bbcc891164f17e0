"""Progress lines for operators: `[host] what: ok (1.2s)`, and phase timings for the summary."""

from __future__ import annotations

import threading
import time
from typing import Callable

from .errors import EasyClusterError, RemoteError
from .errors import StepFailed  # noqa: F401  (defined in errors.py, imported from here too)

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

    def step(self, host: str, what: str, func: Callable[[], object]) -> object:
        """Run one step on one host; a remote failure becomes StepFailed naming both."""
        t0 = time.monotonic()
        try:
            result = func()
        except RemoteError as exc:
            self.say(host, f"{what}: FAILED after {time.monotonic() - t0:.1f}s")
            raise StepFailed(host, what, exc.detail or exc.what) from None
        except EasyClusterError:
            self.say(host, f"{what}: FAILED after {time.monotonic() - t0:.1f}s")
            raise
        self.say(host, f"{what}: ok ({time.monotonic() - t0:.1f}s)")
        return result

    def phase(self, name: str, func: Callable[[], object]) -> object:
        t0 = time.monotonic()
        try:
            return func()
        finally:
            self.phases.append((name, time.monotonic() - t0))
