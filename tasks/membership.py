"""`fab add-master`, `add-satellite`, `remove-node`, `forget-node`, `backup`, `break-lock`: changing who is in
the cluster, one change at a time under the cluster lock, each after a Mnesia backup."""

from __future__ import annotations

from invoke import task

from easycluster import deploy as core
from easycluster import membership
from easycluster.lock import break_lock as remove_locks
from easycluster.lock import describe_holder
from easycluster.progress import Progress
from easycluster.remote import Fleet

from ._common import INVENTORY_HELP, LOCK_WAIT_HELP, inventory_of, operator_errors, say



@task(help={"host": "inventory host to add", "inventory": INVENTORY_HELP, "lock_wait": LOCK_WAIT_HELP})
@operator_errors
def add_master(c, host, inventory=None, lock_wait=0):
    """Provision, configure, start and join one host as a master; no other node restarts."""
    core.add_master(inventory_of(c, inventory), host, out=say, lock_wait=float(lock_wait), role="master")


@task(help={"host": "inventory host to add (role: satellite)", "inventory": INVENTORY_HELP,
            "lock_wait": LOCK_WAIT_HELP})
@operator_errors
def add_satellite(c, host, inventory=None, lock_wait=0):
    """Provision, configure and start one host as a satellite (no disc copy); no other node restarts."""
    core.add_master(inventory_of(c, inventory), host, out=say, lock_wait=float(lock_wait), role="satellite")


@task(help={"host": "member to remove", "inventory": INVENTORY_HELP, "lock_wait": LOCK_WAIT_HELP,
            "drain": "seconds users get to move before the node stops (default 5)"})
@operator_errors
def remove_node(c, host, inventory=None, drain=5, lock_wait=0):
    """Gracefully take a running member out: drain, leave the schema, stop, wipe its Mnesia."""
    inv = inventory_of(c, inventory)
    membership.remove_node(inv, inv.node(host), int(drain), float(lock_wait), Progress(say))


@task(help={"host": "dead member to forget", "inventory": INVENTORY_HELP, "lock_wait": LOCK_WAIT_HELP})
@operator_errors
def forget_node(c, host, inventory=None, lock_wait=0):
    """Remove a dead (stopped, unreachable) member from the schema, from a surviving master."""
    inv = inventory_of(c, inventory)
    membership.forget_node(inv, inv.node(host), float(lock_wait), Progress(say))


@task(help={"host": "member to take the backup on (default: the first running master)",
            "inventory": INVENTORY_HELP})
@operator_errors
def backup(c, host=None, inventory=None):
    """A full Mnesia backup on a running master, kept there with rotation; prints its path."""
    membership.backup_on_demand(inventory_of(c, inventory), host, Progress(say).say)


@task(help={"inventory": INVENTORY_HELP})
@operator_errors
def break_lock(c, inventory=None):
    """Remove the cluster lock left by a run that died (says whose it was)."""
    inv = inventory_of(c, inventory)
    with Fleet(inv) as fleet:
        removed = remove_locks(fleet, list(fleet.hosts))   # unreachable hosts are skipped
    if not removed:
        say("no lock held")
    for host, holder in removed:
        say(f"[{host}] removed: {describe_holder(holder)}")
