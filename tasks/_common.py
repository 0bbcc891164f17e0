"""What every task shares: the options they have in common, how the inventory is found, and
operator-facing errors as one line and exit 1."""

from __future__ import annotations

import functools
import sys
import time

from invoke.exceptions import Exit

from easycluster.errors import EasyClusterError
from easycluster.inventory import Inventory, load_inventory

INVENTORY_HELP = ("inventory file (default: $EASYCLUSTER_INVENTORY, else easycluster.inventory in"
                  " fabric.yaml, else ./inventory.yml)")
DRY_HELP = "print what would be done, and why, and change nothing"
LOCK_WAIT_HELP = "seconds to wait for another change of the cluster to finish (default: refuse at once)"


def inventory_of(c, given: str | None) -> Inventory:
    """The inventory a task works on: --inventory, $EASYCLUSTER_INVENTORY, the `easycluster.inventory`
    setting of Fabric's configuration files, ./inventory.yml (easycluster.inventory.inventory_path)."""
    configured = (c.config.get("easycluster") or {}).get("inventory")
    return load_inventory(given, configured)


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


def confirmer(yes: bool):
    """The question a command asks before a change that cannot be taken back: yes with --yes,
    else asked on the terminal (no terminal: not confirmed)."""
    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            say(f"{question}\nnot confirmed: no terminal to ask on (add --yes)")
            return False
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    return confirm
