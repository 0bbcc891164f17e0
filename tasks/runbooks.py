"""The operators' runbooks as tasks: smoke, stop-cluster, start-cluster, rolling-restart, heal,
restore. Each is documented in docs/runbooks/."""

from __future__ import annotations


from invoke import task
from invoke.exceptions import Exit

from easycluster.ops import heal as heal_core
from easycluster.ops import outage, rolling
from easycluster.ops import restore as restore_core
from easycluster.ops.status import format_table

from ._common import DRY_HELP, INVENTORY_HELP, LOCK_WAIT_HELP, confirmer, inventory_of, operator_errors, say



def _done(health, dry: bool = False) -> None:
    """The cluster as the command leaves it; exit 1 when unhealthy (a dry run: as it was found,
    the verdict shown, the exit 0 unless the command refused)."""
    say(format_table(health))
    if not health.healthy and not dry:
        raise Exit(code=1)


@task(help={"inventory": INVENTORY_HELP})
@operator_errors
def smoke(c, inventory=None):
    """Log a real XMPP client into every node and message across every pair; exit 1 on any failure."""
    # (here, not at the top: the XMPP client library costs every other command ~0.1 s to import)
    from easycluster.ops import smoke as smoke_core
    report = smoke_core.smoke(inventory_of(c, inventory), out=say)
    say(smoke_core.format_report(report))
    if not report.passed:
        raise Exit(code=1)


@task(help={"inventory": INVENTORY_HELP, "lock_wait": LOCK_WAIT_HELP, "dry": DRY_HELP})
@operator_errors
def stop_cluster(c, inventory=None, dry=False, lock_wait=0):
    """Stop every node, one at a time, and record the order (for `fab start-cluster`)."""
    outage.stop_cluster(inventory_of(c, inventory), out=say, dry=dry, lock_wait=float(lock_wait))


@task(help={"inventory": INVENTORY_HELP, "wait": "seconds to wait for every node (default 120)",
            "without": "comma-separated hosts lost for good: the others load their own copies of the tables",
            "lock_wait": LOCK_WAIT_HELP, "dry": DRY_HELP})
@operator_errors
def start_cluster(c, inventory=None, wait=120, without="", dry=False, lock_wait=0):
    """Start every stopped node at once (after an outage) and wait until all are back."""
    lost = tuple(h for h in without.split(",") if h)
    _done(outage.start_cluster(inventory_of(c, inventory), out=say, dry=dry, lock_wait=float(lock_wait),
                               wait=float(wait), without=lost), dry)


@task(help={"inventory": INVENTORY_HELP, "drain": "seconds users get to move before a node stops (default 5)",
            "lock_wait": LOCK_WAIT_HELP, "dry": DRY_HELP})
@operator_errors
def rolling_restart(c, inventory=None, drain=5, dry=False, lock_wait=0):
    """Restart every node, one at a time; each must be back with every table before the next."""
    _done(rolling.rolling_restart(inventory_of(c, inventory), out=say, dry=dry, lock_wait=float(lock_wait),
                                  drain=int(drain)), dry)


@task(help={"inventory": INVENTORY_HELP, "winner": "a node of the side whose data is kept (host or node name)",
            "lock_wait": LOCK_WAIT_HELP, "dry": DRY_HELP})
@operator_errors
def heal(c, winner=None, inventory=None, dry=False, lock_wait=0):
    """After a partition: keep the winner's side, restart the other side from it, verify."""
    _done(heal_core.heal(inventory_of(c, inventory), winner, out=say, dry=dry, lock_wait=float(lock_wait)), dry)


@task(help={"backup": "path of a backup taken by `fab backup` (on a node)", "inventory": INVENTORY_HELP,
            "yes": "do not ask for confirmation", "lock_wait": LOCK_WAIT_HELP, "dry": DRY_HELP})
@operator_errors
def restore(c, backup, inventory=None, yes=False, dry=False, lock_wait=0):
    """Replace the whole cluster's stored data with a backup's (asks first); verify every node."""
    _done(restore_core.restore(inventory_of(c, inventory), backup, confirm=confirmer(yes), out=say, dry=dry,
                               lock_wait=float(lock_wait)), dry)
