"""Fabric tasks: thin wrappers that parse arguments, call easycluster, print."""
