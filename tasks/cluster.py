"""`fab deploy`, `fab plan`, `fab status`: the cluster, from the inventory."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from easycluster.deploy import deploy as run_deploy
from easycluster.status import cluster_health, format_json, format_table

from ._common import INVENTORY_HELP, inventory_of, operator_errors, say



def _deploy(c, inventory, dry):
    inv = inventory_of(c, inventory)
    result = run_deploy(inv, dry=dry, out=say)
    if not dry and not result.plan.changes:
        say("no changes")


@task(help={"inventory": INVENTORY_HELP, "dry": "print the plan (diffs, restarts, joins) and change nothing"})
@operator_errors
def deploy(c, inventory=None, dry=False):
    """Provision, configure, start and join every node as a master; verify."""
    _deploy(c, inventory, dry)


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
    health = cluster_health(inventory_of(c, inventory))
    say(format_json(health, tables) if json else format_table(health, tables))
    if not health.healthy:
        raise Exit(code=1)
