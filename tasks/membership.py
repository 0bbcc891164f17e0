"""`fab add-master`, `add-satellite`, `remove-node`, `forget-node`, `remove-database-host`, `backup`,
`break-lock`: changing who is in the cluster, one change at a time under the cluster lock, each after a Mnesia backup."""

from __future__ import annotations

from invoke import task

from easycluster.ops import database_members, remove
from easycluster.ops import deploy as core

from ._common import DRY_HELP, INVENTORY_HELP, LOCK_WAIT_HELP, confirmer, inventory_of, operator_errors, say


@task(help={"host": "inventory host to add", "inventory": INVENTORY_HELP, "lock_wait": LOCK_WAIT_HELP,
            "dry": DRY_HELP})
@operator_errors
def add_master(c, host, inventory=None, dry=False, lock_wait=0):
    """Provision, configure, start and join one host as a master; no other node restarts."""
    core.add_master(inventory_of(c, inventory), host, out=say, dry=dry, lock_wait=float(lock_wait))


@task(help={"host": "inventory host to add (role: satellite)", "inventory": INVENTORY_HELP,
            "lock_wait": LOCK_WAIT_HELP, "dry": DRY_HELP})
@operator_errors
def add_satellite(c, host, inventory=None, dry=False, lock_wait=0):
    """Provision, configure and start one host as a satellite (no disc copy); no other node restarts."""
    core.add_satellite(inventory_of(c, inventory), host, out=say, dry=dry, lock_wait=float(lock_wait))


@task(help={"host": "member to remove", "inventory": INVENTORY_HELP, "lock_wait": LOCK_WAIT_HELP,
            "drain": "seconds users get to move before the node stops (default 5)", "dry": DRY_HELP})
@operator_errors
def remove_node(c, host, inventory=None, drain=5, dry=False, lock_wait=0):
    """Gracefully take a running member out: drain, leave the schema, stop, wipe its Mnesia."""
    remove.remove_node(inventory_of(c, inventory), host, out=say, dry=dry, lock_wait=float(lock_wait),
                       drain=int(drain))


@task(help={"host": "dead member to forget", "inventory": INVENTORY_HELP, "lock_wait": LOCK_WAIT_HELP,
            "dry": DRY_HELP})
@operator_errors
def forget_node(c, host, inventory=None, dry=False, lock_wait=0):
    """Remove a dead (stopped, unreachable) member from the schema, from a surviving master."""
    remove.forget_node(inventory_of(c, inventory), host, out=say, dry=dry, lock_wait=float(lock_wait))


@task(help={"host": "database member to take out (cluster.database.hosts, or the quorum store's name or id)",
            "inventory": INVENTORY_HELP, "lock_wait": LOCK_WAIT_HELP, "dry": DRY_HELP})
@operator_errors
def remove_database_host(c, host, inventory=None, dry=False, lock_wait=0):
    """Take a member out of the replicated database, alive or dead (a primary hands over first)."""
    database_members.remove_database_host(inventory_of(c, inventory), host, out=say, dry=dry,
                                          lock_wait=float(lock_wait))


@task(help={"host": "the database member left (cluster.database.hosts)", "inventory": INVENTORY_HELP,
            "yes": "do not ask for confirmation", "lock_wait": LOCK_WAIT_HELP, "dry": DRY_HELP})
@operator_errors
def force_database_quorum(c, host, inventory=None, yes=False, dry=False, lock_wait=0):
    """Two database hosts lost for good: remake the quorum store from the one left (asks first)."""
    database_members.force_database_quorum(inventory_of(c, inventory), host, confirm=confirmer(yes), out=say,
                                           dry=dry, lock_wait=float(lock_wait))


@task(help={"host": "member to take the backup on (default: the first running master)",
            "inventory": INVENTORY_HELP})
@operator_errors
def backup(c, host=None, inventory=None):
    """A full Mnesia backup on a running master, kept there with rotation; prints its path."""
    remove.backup_now(inventory_of(c, inventory), host, out=say)


@task(help={"inventory": INVENTORY_HELP})
@operator_errors
def break_lock(c, inventory=None):
    """Remove the cluster lock left by a run that died (says whose it was)."""
    remove.break_lock(inventory_of(c, inventory), out=say)
