"""The layers held (docs/architecture.md §1), read from the source with `ast` (pure: no host,
nothing of easycluster imported).

Every module of the easycluster package (the packages pyproject.toml builds, tasks/ included)
is parsed, and every import it makes is collected: at the top, inside functions, relative or
absolute (`from . import x` is the module easycluster.x; `from .x import y` is the module
easycluster.x.y when there is one, else the name y of easycluster.x). Then:

- no import cycle among easycluster's modules;
- the pure layer (the inventory, the fact model, the plan, health, rendering...) never reaches
  a module or library that talks to hosts, nor a command, not even through another module;
  the host layer never reaches a command;
- no module uses another module's private name (a leading underscore);
- every name is imported from the module that defines it: no re-exports (`noqa: F401`);
- every module is placed in exactly one layer below: a new module must be placed.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------ the layers

# No I/O to any host: functions of the inventory, the facts and the files, tested without a lab.
PURE = {
    "easycluster",                 # the package itself (its version)
    "easycluster.inventory", "easycluster.paths", "easycluster.errors", "easycluster.secrets",
    "easycluster.releases", "easycluster.facts", "easycluster.plan", "easycluster.health",
    "easycluster.render", "easycluster.tls", "easycluster.progress", "easycluster.refusals", "easycluster.monitoring",
    "easycluster.templates", "easycluster.plugin",    # package data (templates/, plugin/)
    "easycluster.sql",                                # package data: ejabberd's schema steps
}
# Talks to hosts (SSH, SFTP, a database over a node's connection, XMPP), or renders the
# scripts that do; the libraries that do it are the host layer's alone.
HOST = {
    "easycluster.remote", "easycluster.nodectl", "easycluster.scripts", "easycluster.lock",
    "easycluster.database", "easycluster.probe", "easycluster.xmpp", "easycluster.replicated", "easycluster.monitorctl",
}
HOST_LIBRARIES = {"fabric", "invoke", "paramiko", "pg8000", "scramp", "slixmpp"}
# The operation layer: what every command shares (easycluster.operation: progress, the fleet,
# facts or health, departed nodes, the lock, the summary), the apply engine (a plan's steps on
# the fleet, in the one phase order) and the join and leave steps both use.
ENGINE = {"easycluster.operation", "easycluster.apply", "easycluster.membership"}
# The commands (easycluster/ops/: facts -> plan -> apply -> verify, each through the operation
# layer), the tasks, the program.
OPERATIONS = {
    "easycluster.ops", "easycluster.ops.deploy", "easycluster.ops.remove", "easycluster.ops.database_members", "easycluster.ops.migrate", "easycluster.ops.upgrade",
    "easycluster.ops.cookie_rotation", "easycluster.ops.heal", "easycluster.ops.restore", "easycluster.ops.rolling",
    "easycluster.ops.outage", "easycluster.ops.smoke", "easycluster.ops.status", "easycluster.cli",
}
TASKS = "easycluster.tasks"        # the package and every module in it: the Fabric tasks
LAYERS = (("PURE", PURE), ("HOST", HOST), ("ENGINE", ENGINE), ("OPERATIONS", OPERATIONS))
# Listed before they exist (another change brings them): their absence is no failure.
NOT_YET: set[str] = set()


def layer_of(module: str) -> str | None:
    if module == TASKS or module.startswith(TASKS + "."):
        return "TASKS"
    found = [name for name, members in LAYERS if module in members]
    return found[0] if len(found) == 1 else None


# ------------------------------------------------------------------------------------ the source

@cache
def modules() -> dict[str, Path]:
    """Every module of the packages pyproject.toml builds: dotted name -> file."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = setup.get("package-dir", {})
    found = {}
    for package in setup["packages"]:
        folder = REPO / dirs.get(package, package.replace(".", "/"))
        for path in sorted(folder.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


@cache
def tree(module: str) -> ast.Module:
    path = modules()[module]
    return ast.parse(path.read_text(), filename=str(path))


def is_package(module: str) -> bool:
    return modules()[module].name == "__init__.py"


@dataclass(frozen=True)
class Import:
    importer: str
    line: int
    target: str             # an easycluster module, or the top-level name of a library
    name: str | None = None  # a name imported from the target module (None: the module itself)
    alias: str | None = None  # the local name an easycluster module is bound to...
    binds: str | None = None  # ...and that module (`import easycluster.x` binds easycluster)
    at: tuple[int, int] = (0, 0)  # the import statement's line and column (the scope it binds in)

    @property
    def ours(self) -> bool:
        return self.target in modules()

    @property
    def where(self) -> str:
        return f"{self.importer}:{self.line}"


def absolute(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package(importer) else importer.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _at(node: ast.stmt) -> tuple[int, int]:
    return node.lineno, node.col_offset


@cache
def imports(module: str) -> tuple[Import, ...]:
    """Every import of `module`, wherever it is in the file."""
    found = []
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "easycluster":
                    # `import easycluster.x.y` binds easycluster; `import easycluster.x.y as z`, z
                    found.append(Import(module, node.lineno, a.name, alias=a.asname or "easycluster",
                                        binds=a.name if a.asname else "easycluster", at=_at(node)))
                else:
                    found.append(Import(module, node.lineno, a.name.split(".")[0]))
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, node)
            if source.split(".")[0] != "easycluster":
                found.append(Import(module, node.lineno, source.split(".")[0]))
                continue
            for a in node.names:
                sub = f"{source}.{a.name}"
                if sub in modules():
                    found.append(Import(module, node.lineno, sub, alias=a.asname or a.name, binds=sub,
                                        at=_at(node)))
                else:
                    found.append(Import(module, node.lineno, source, name=a.name))
    return tuple(found)


def parents(module: str) -> list[str]:
    """The packages importing `module` runs first (easycluster.scripts for easycluster.scripts.x...)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules()]


def reached(start: str, edges) -> dict[str, Import | None]:
    """Everything `start` reaches through `edges(module)`, each with the import it was first
    reached by (breadth first: the chain back from any of them is a shortest one)."""
    came: dict[str, Import | None] = {start: None}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if here not in modules():
            continue
        for imp in edges(here):
            if imp.target not in came:
                came[imp.target] = imp
                queue.append(imp.target)
    return came


def chain(came: dict[str, Import | None], end: str) -> str:
    """`a -> b (line 3 of a) -> c (line 9 of b)`: how the start of `came` reached `end`."""
    steps = []
    while came[end] is not None:
        steps.append(came[end])
        end = came[end].importer
    return " -> ".join([end] + [f"{s.target} ({f'line {s.line} of {s.importer}' if s.line else 'its package'})"
                                for s in reversed(steps)])


def runs(module: str) -> list[Import]:
    """What importing `module` runs: its own imports and its packages' (their __init__)."""
    return list(imports(module)) + [Import(module, 0, p) for p in parents(module)]


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@cache
def defined(module: str) -> frozenset[str]:
    """The names `module` defines itself at its top level (not the ones it imports)."""
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
    visit(tree(module).body)
    return frozenset(names)


def _bindings(body: list[ast.stmt], module: str) -> tuple[dict[str, str], set[str]]:
    """In one scope (its statements, not those of the functions and classes in it): the names
    imports bind to easycluster modules, and every other name bound there."""
    aliases: dict[str, str] = {}
    bound: set[str] = set()
    here = {_at(n) for stmt in body for n in _own_nodes(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for imp in imports(module):
        if imp.alias and imp.at in here:
            aliases[imp.alias] = imp.binds
    for stmt in body:
        for n in _own_nodes(stmt):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                bound.add(n.id)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(n.name)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in n.names)
    return aliases, bound - set(aliases)


def _own_nodes(node: ast.AST):
    """`node` and what is inside it, but not inside a function, lambda or class: those are
    yielded themselves (their names are bound here), not entered."""
    yield node
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
        for child in ast.iter_child_nodes(node):
            yield from _own_nodes(child)


def attribute_uses(module: str) -> list[tuple[int, str, str]]:
    """(line, easycluster module, attribute) of every `alias.attribute` where alias is bound to
    an easycluster module by an import (`from . import facts as factmod`: factmod.HostFacts),
    in the scope of that import; dotted chains through packages are followed
    (easycluster.ops.deploy._Apply after `import easycluster.ops.deploy`)."""
    found = []

    def resolve(node, aliases) -> str | None:
        if isinstance(node, ast.Name):
            return aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = resolve(node.value, aliases)
            if base and f"{base}.{node.attr}" in modules():
                return f"{base}.{node.attr}"
        return None

    def scope(body: list[ast.stmt], outer: dict[str, str], args: set[str] = frozenset()) -> None:
        own, bound = _bindings(body, module)
        aliases = {k: v for k, v in outer.items() if k not in bound and k not in args} | own
        for stmt in body:
            for node in _own_nodes(stmt):
                if isinstance(node, ast.Attribute):
                    base = resolve(node.value, aliases)
                    if base and f"{base}.{node.attr}" not in modules():
                        found.append((node.lineno, base, node.attr))
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    outside = getattr(node, "decorator_list", []) + node.args.defaults + node.args.kw_defaults
                    scope([ast.Expr(e) for e in outside if e is not None], aliases)
                    names = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
                    scope(node.body if isinstance(node.body, list) else [ast.Expr(node.body)], aliases, names)
                elif isinstance(node, ast.ClassDef):
                    scope([ast.Expr(e) for e in node.decorator_list + node.bases], aliases)
                    scope(node.body, aliases)

    scope(tree(module).body, {})
    return found


# ------------------------------------------------------------------------------------ the tests

def test_every_module_is_placed_in_one_layer_and_every_listed_module_exists():
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    twice = sorted({m for i, (_, a) in enumerate(LAYERS) for _, b in LAYERS[i + 1:] for m in a & b})
    missing = sorted(set().union(*(members for _, members in LAYERS)) - set(modules()) - NOT_YET)
    assert not unplaced, ("modules in no layer of tests/test_layers.py (place each in PURE, HOST, ENGINE or "
                          "OPERATIONS): " + ", ".join(unplaced))
    assert not twice, "modules placed in two layers: " + ", ".join(twice)
    assert not missing, ("tests/test_layers.py places modules that do not exist (moved or renamed? update "
                         "the layers): " + ", ".join(missing))


def test_no_import_cycle_among_easyclusters_modules():
    edges = {m: list({i.target: i for i in reversed(imports(m)) if i.ours and i.target != m}.values())
             for m in modules()}
    state: dict[str, str] = {}
    path: list[Import] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = "open"
        for imp in edges[m]:
            if state.get(imp.target) == "open":
                start = next((i for i, p in enumerate(path) if p.importer == imp.target), len(path))
                loop = path[start:] + [imp]
                cycles.append(" -> ".join([loop[0].importer] + [f"{p.target} (line {p.line} of {p.importer})"
                                                                for p in loop]))
            elif imp.target not in state:
                path.append(imp)
                visit(imp.target)
                path.pop()
        state[m] = "done"

    for m in sorted(modules()):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles (function-level imports count):\n  " + "\n  ".join(cycles)


def crossings(layer: set[str], forbidden) -> list[str]:
    """Each module of `layer` followed through the modules of `layer` it reaches, to the first
    import out of it that `forbidden(target)` names: reported with the chain that leads there."""
    found = []
    for m in sorted(layer & set(modules())):
        came = reached(m, lambda here: runs(here) if here in layer else [])
        found += [f"{m} reaches {forbidden(t)} {t}: {chain(came, t)}" for t in sorted(came)
                  if t != m and forbidden(t)]
    return found


def test_the_pure_layer_reaches_neither_the_hosts_nor_a_command():
    def forbidden(target: str) -> str | None:
        if target in modules() and layer_of(target) != "PURE":
            return f"{layer_of(target)} module"
        return "host library" if target in HOST_LIBRARIES else None
    found = crossings(PURE, forbidden)
    assert not found, ("the pure layer must not reach the host layer or a command, not even through another "
                       "module (move what it needs into the pure layer):\n  " + "\n  ".join(found))


def test_the_host_layer_reaches_neither_the_operation_layer_nor_a_command():
    def forbidden(target: str) -> str | None:
        return f"{layer_of(target)} module" if layer_of(target) in ("ENGINE", "OPERATIONS", "TASKS") else None
    found = crossings(HOST, forbidden)
    assert not found, "the host layer must not reach the operation layer or a command:\n  " + "\n  ".join(found)


def test_the_operation_layer_reaches_no_command():
    def forbidden(target: str) -> str | None:
        return f"{layer_of(target)} module" if layer_of(target) in ("OPERATIONS", "TASKS") else None
    found = crossings(ENGINE, forbidden)
    assert not found, "the operation layer must not reach a command:\n  " + "\n  ".join(found)


def test_no_module_uses_another_modules_private_name():
    found = []
    for m in sorted(modules()):
        for imp in imports(m):
            if not imp.ours or imp.target == m:
                continue
            if imp.name is not None and private(imp.name):
                found.append(f"{imp.where}: imports {imp.name} from {imp.target}")
            owner = imp.target.rpartition(".")[0]
            if imp.name is None and private(imp.target.rpartition(".")[2]) and not (
                    m == owner or m.rpartition(".")[0] == owner):
                found.append(f"{imp.where}: imports {imp.target}, private to {owner}")
        for line, target, attr in attribute_uses(m):
            if target != m and private(attr):
                found.append(f"{m}:{line}: uses {target}.{attr}")
    assert not found, ("private names used outside their module (make the name public where it is "
                       "defined, or move it):\n  " + "\n  ".join(found))


def test_every_name_is_imported_from_the_module_that_defines_it():
    found = []
    for m in sorted(modules()):
        source = modules()[m].read_text()
        found += [f"{m}:{n}: a `noqa: F401` import (a re-export?)" for n, line in enumerate(source.splitlines(), 1)
                  if re.search(r"noqa:\s*[A-Z0-9, ]*F401", line)]
        for imp in imports(m):
            if imp.ours and imp.name is not None and imp.name != "*" and imp.name not in defined(imp.target):
                found.append(f"{imp.where}: imports {imp.name} from {imp.target}, which does not define it")
        for line, target, attr in attribute_uses(m):
            if attr not in defined(target) and not (attr.startswith("__") and attr.endswith("__")):
                found.append(f"{m}:{line}: uses {target}.{attr}, which {target} does not define")
    assert not found, ("import each name from the module that defines it (no re-exports):\n  "
                       + "\n  ".join(found))


def test_no_command_imports_another_command():
    """Commands share the operation layer, not each other: each module of easycluster/ops/ is one
    command (or one family of them) and imports no other."""
    found = [f"{imp.where}: {m} imports {imp.target}" for m in sorted(modules()) if m.startswith("easycluster.ops.")
             for imp in imports(m) if imp.ours and imp.target.startswith("easycluster.ops.") and imp.target != m]
    assert not found, "a command imports another (move what they share into the operation layer):\n  " + \
        "\n  ".join(found)


def test_docs_architecture_places_every_module_in_its_layer():
    """docs/architecture.md's table of the layers names every module, in the row of its layer."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    rows = {row.split("|")[1].strip(): row for row in doc.splitlines()
            if row.startswith("| ") and row.split("|")[1].strip() in ("pure", "host", "operation", "commands")}
    layer_row = {"PURE": "pure", "HOST": "host", "ENGINE": "operation", "OPERATIONS": "commands"}
    missing = []
    for m in sorted(modules()):
        layer = layer_of(m)
        if layer == "TASKS" or m in ("easycluster", "easycluster.templates", "easycluster.plugin", "easycluster.ops"):
            continue
        if f"`{m.rpartition('.')[2]}`" not in rows.get(layer_row[layer], ""):
            missing.append(f"{m} (layer {layer_row[layer]})")
    assert not missing, "docs/architecture.md §1 does not name in its layer's row: " + ", ".join(missing)
