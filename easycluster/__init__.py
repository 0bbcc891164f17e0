"""easycluster: deploy and operate multi-master ejabberd clusters over SSH."""

from importlib import metadata

try:
    __version__ = metadata.version("easycluster")
except metadata.PackageNotFoundError:   # run from a checkout without being installed
    __version__ = "0+unknown"
