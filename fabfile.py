from easycluster.tasks import ns  # noqa: F401  (the whole fabfile: the collection is the package's)
