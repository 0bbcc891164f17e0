"""The task collection: `fab` (with a one-line fabfile) and the `easycluster` command run it.

Tasks are thin: they parse arguments, call easycluster and print. Collections of other
distributions join through the `easycluster.collections` entry point (the lab registers
`lab` there), so this package never imports them.
"""

from __future__ import annotations

from importlib import metadata

from invoke import Collection

from . import cluster, membership, runbooks, security

ENTRY_POINTS = "easycluster.collections"

ns = Collection()
for _task in (cluster.deploy, cluster.plan, cluster.status, cluster.upgrade, cluster.migrate_to_sql,
              membership.add_master, membership.add_satellite, membership.remove_node, membership.forget_node,
              membership.remove_database_host, membership.force_database_quorum, membership.backup, membership.break_lock,
              runbooks.smoke, runbooks.stop_cluster, runbooks.start_cluster, runbooks.rolling_restart,
              runbooks.heal, runbooks.restore,
              security.rotate_cookie):
    ns.add_task(_task)
for _entry in metadata.entry_points(group=ENTRY_POINTS):
    ns.add_collection(_entry.load(), name=_entry.name)

__all__ = ["ns"]
