"""What every task shares: operator-facing errors become one line and exit 1."""

from __future__ import annotations

import functools
import sys
import time

from invoke.exceptions import Exit

from easycluster.errors import EasyClusterError


def operator_errors(func):
    """Report an EasyClusterError as `error: ...` and exit 1, without a traceback."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EasyClusterError as exc:
            raise Exit(f"error: {exc}", code=1) from None
    return wrapper


def say(message: str) -> None:
    print(message, flush=True)


def timed_say(prefix: str):
    """A progress printer whose lines carry the seconds since it was made."""
    start = time.monotonic()

    def emit(message: str) -> None:
        print(f"{prefix}[{time.monotonic() - start:6.1f}s] {message}", flush=True)
    return emit


def eprint(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
