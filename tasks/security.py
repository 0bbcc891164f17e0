"""`fab rotate-cookie`: the cluster's secrets."""

from __future__ import annotations

from invoke import task

from easycluster.ops.cookie_rotation import rotate_cookie as run_rotation

from ._common import DRY_HELP, INVENTORY_HELP, LOCK_WAIT_HELP, inventory_of, operator_errors, say



@task(help={"inventory": INVENTORY_HELP,
            "new_cookie_file": "with cluster.cookie.env only: a file (mode 0600) holding the new cookie",
            "lock_wait": LOCK_WAIT_HELP, "dry": DRY_HELP})
@operator_errors
def rotate_cookie(c, inventory=None, new_cookie_file=None, dry=False, lock_wait=0):
    """Give the running cluster a new Erlang cookie, without downtime; rerun to finish an interrupted one."""
    run_rotation(inventory_of(c, inventory), out=say, dry=dry, lock_wait=float(lock_wait),
                 new_cookie_file=new_cookie_file)
