"""`fab deploy`, `fab plan`, `fab status`: the cluster, from the inventory."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from easycluster.ops import migrate as migrate_core
from easycluster.ops import upgrade as upgrade_core
from easycluster.ops.deploy import deploy as run_deploy
from easycluster.ops.status import cluster_health, format_json, format_table

from ._common import INVENTORY_HELP, LOCK_WAIT_HELP, inventory_of, operator_errors, say



def _deploy(c, inventory, dry, lock_wait=0):
    inv = inventory_of(c, inventory)
    result = run_deploy(inv, dry=dry, out=say, lock_wait=float(lock_wait))
    if not dry and not result.plan.changes:
        say("no changes")


@task(help={"inventory": INVENTORY_HELP, "dry": "print the plan (diffs, restarts, joins) and change nothing",
            "lock_wait": LOCK_WAIT_HELP})
@operator_errors
def deploy(c, inventory=None, dry=False, lock_wait=0):
    """Provision, configure, start and join every node as a master; verify."""
    _deploy(c, inventory, dry, lock_wait)


@task(help={"inventory": INVENTORY_HELP})
@operator_errors
def plan(c, inventory=None):
    """What `fab deploy` would change, per host (same as `fab deploy --dry`)."""
    _deploy(c, inventory, dry=True)


@task(help={"inventory": INVENTORY_HELP, "json": "one JSON object (for monitoring)",
            "tables": "also the replica matrix: tables x nodes, storage type"})
@operator_errors
def status(c, inventory=None, json=False, tables=False):
    """Per node: running, member, master, sessions; exit 1 when unhealthy."""
    health = cluster_health(inventory_of(c, inventory), out=say)
    say(format_json(health, tables) if json else format_table(health, tables))
    if not health.healthy:
        raise Exit(code=1)


@task(help={"inventory": INVENTORY_HELP, "dry": "print the plan (versions, strategy and why) and change nothing",
            "revert": "after a full-stop upgrade: every node back on the pinned (old) version with its Mnesia "
                      "directory as copied during the upgrade",
            "copy": "with --revert: the copies' stamp (default: the newest found on every node)",
            "lock_wait": LOCK_WAIT_HELP})
@operator_errors
def upgrade(c, inventory=None, dry=False, revert=False, copy=None, lock_wait=0):
    """Move the running cluster to the pinned ejabberd version: rolling, or a planned full stop."""
    inv = inventory_of(c, inventory)
    if revert:
        say(format_table(upgrade_core.revert(inv, out=say, dry=dry, lock_wait=float(lock_wait), stamp=copy)))
        return
    upgrade_core.upgrade(inv, dry=dry, out=say, lock_wait=float(lock_wait))


@task(name="migrate-to-sql", help={"inventory": INVENTORY_HELP,
                                   "dry": "print what would be done (database, export, switch) and change nothing",
                                   "lock_wait": LOCK_WAIT_HELP})
@operator_errors
def migrate_to_sql(c, inventory=None, dry=False, lock_wait=0):
    """Move a running Mnesia cluster's data into cluster.database, then switch the nodes to it one at a time."""
    migrate_core.migrate_to_sql(inventory_of(c, inventory), dry=dry, out=say, lock_wait=float(lock_wait))
