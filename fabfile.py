"""The `fab` entry point: assembles the task collection, nothing else."""

from invoke import Collection

from tasks import lab

ns = Collection()
ns.add_collection(Collection.from_module(lab), name="lab")
