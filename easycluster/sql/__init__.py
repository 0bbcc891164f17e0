"""ejabberd's PostgreSQL schema steps that easycluster applies itself (the pg-YY.MM.sql beside
this file), for an upgrade of a cluster with cluster.database across them.

ejabberd keeps its own updater off in easycluster's clusters (update_sql_schema: false, see
templates/ejabberd.yml.j2): it would run at each node's start, on whichever node starts first,
while older nodes may still write. easycluster applies the same statements instead, once, in
one transaction, while every node is stopped (ops/upgrade.py, the full stop's "database" phase).

Each file is what ejabberd's updater (ejabberd_sql_schema, 26.07) does for one release's step
on pgsql with the multi-host schema, and starts with one comment line `-- applied: QUERY`: a
query answering true when the database already has the step (it is then skipped: a rerun after
a cut applies only what is missing). The lab test compares the result, table by table, with the
new release's own pg.new.sql loaded into an empty database.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^pg-(\d+)\.(\d+)\.sql$")
_APPLIED = re.compile(r"^-- applied: (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class SchemaStep:
    at: tuple[int, int]       # the ejabberd release that brought it
    applied: str              # a query: true when the database has it
    sql: str                  # the statements

    @property
    def label(self) -> str:
        return label(self.at)


def label(at: tuple[int, int]) -> str:
    """A schema step's name, by the ejabberd release that brought it: (26, 1) -> "26.01"."""
    return f"{at[0]}.{at[1]:02d}"


@functools.cache
def steps() -> dict[tuple[int, int], SchemaStep]:
    """The steps easycluster has statements for, by release."""
    found = {}
    for entry in resources.files(__package__).iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        text = entry.read_text()
        applied = _APPLIED.search(text)
        if applied is None:
            raise ValueError(f"easycluster/sql/{entry.name}: no '-- applied: QUERY' line")
        at = (int(m.group(1)), int(m.group(2)))
        found[at] = SchemaStep(at, applied.group(1).strip(), text)
    return dict(sorted(found.items()))
