"""`easycluster`: the same task collection as `fab` with a one-line fabfile, from any directory.

    easycluster --list
    easycluster deploy --inventory inventory.yml --dry
    easycluster status -i inventory.yml

Fabric's own program (its core flags, its configuration files) with easycluster's collection,
so no fabfile is looked for.
"""

from __future__ import annotations

from fabric import Config, Executor
from fabric.main import Fab

from . import __version__
from .tasks import ns


def program() -> Fab:
    return Fab(name="easycluster", version=__version__, namespace=ns, executor_class=Executor,
               config_class=Config, binary="easycluster", binary_names=["easycluster"])


def main() -> None:
    program().run()
