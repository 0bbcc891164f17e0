"""The `fab` entry point: assembles the task collection, nothing else."""

from invoke import Collection

from tasks import cluster, lab

ns = Collection()
ns.add_task(cluster.deploy)
ns.add_task(cluster.plan)
ns.add_task(cluster.status)
ns.add_collection(Collection.from_module(lab), name="lab")
