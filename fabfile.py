"""The `fab` entry point: assembles the task collection, nothing else."""

from invoke import Collection

from tasks import cluster, lab, membership, runbooks
from tasks import security

ns = Collection()
ns.add_task(cluster.deploy)
ns.add_task(cluster.plan)
ns.add_task(cluster.status)
ns.add_task(membership.add_master)
ns.add_task(membership.remove_node)
ns.add_task(membership.forget_node)
ns.add_task(membership.backup)
ns.add_task(membership.break_lock)
for runbook in (runbooks.smoke, runbooks.stop_cluster, runbooks.start_cluster, runbooks.rolling_restart,
                runbooks.heal, runbooks.restore):
    ns.add_task(runbook)
ns.add_task(security.rotate_cookie)
ns.add_collection(Collection.from_module(lab), name="lab")
