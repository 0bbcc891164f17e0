"""The plugin (plugin/*.erl) held to what the toolkit renders and to easycluster.paths, read
from the Erlang source (pure: no Erlang, no host).

Module options. ejabberd builds a module's option validators from its mod_options/1 alone (one
per option listed there, typed by mod_opt_type/1) and refuses at config load any option not
listed ("unknown option"). So a gen_mod of the plugin must list exactly the options its code
reads, give each an econf type by a clause of its own (no catch-all clause, which would type
options nobody reads), and ejabberd.yml.j2 must render no option it does not list: a dead
option (say `join_wait_seconds`) would stop every node at config load.

Paths. The plugin spells the files it shares with the toolkit (the join's log, go and pause
files...), as Erlang cannot import easycluster.paths: each absolute path it spells must be one
of easycluster.paths, and the tests and load/ take those paths from easycluster.paths, never
spelling them again.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from easycluster import paths
from easycluster.inventory import parse_inventory
from easycluster.render import managed_files
from easycluster.secrets import Secret

REPO = Path(__file__).resolve().parent.parent
PLUGIN = sorted((REPO / "plugin").glob("*.erl"))
# Paths of the operating system's interfaces, not easycluster's nor ejabberd's (paths.py's docstring).
OS_PATHS = ("/proc/", "/sys/", "/dev/", "/etc/os-release")


# ------------------------------------------------------------------------------------ Erlang source

_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*")
  | (?P<qatom>'(?:\\.|[^'\\])*')
  | (?P<char>\$\\.|\$.)
  | (?P<comment>%[^\n]*)
  | (?P<other>[^"'$%]+)
""", re.VERBOSE | re.DOTALL)


@dataclass(frozen=True)
class Source:
    name: str
    code: str                           # comments blanked out (strings and lines kept)
    strings: tuple[tuple[int, str], ...] = ()   # (line, contents) of every string literal
    bare: str = ""                      # code with the strings' and characters' contents blanked too

    def __post_init__(self):
        if not self.bare:
            object.__setattr__(self, "bare", _blank_strings(self.code))


def _blank_strings(code: str) -> str:
    out = []
    for m in _TOKEN.finditer(code):
        t = m.group()
        out.append('"' + " " * (len(t) - 2) + '"' if m.lastgroup == "string"
                   else " " * len(t) if m.lastgroup == "char" else t)
    return "".join(out)


def parse(path: Path) -> Source:
    text = path.read_text()
    code, strings, pos = [], [], 0
    for m in _TOKEN.finditer(text):
        assert m.start() == pos, f"{path.name}: cannot scan at offset {pos}: {text[pos:pos + 40]!r}"
        pos = m.end()
        if m.lastgroup == "comment":
            code.append(" " * len(m.group()))
            continue
        if m.lastgroup == "string":
            line = text.count("\n", 0, m.start()) + 1
            strings.append((line, re.sub(r"\\(.)", r"\1", m.group()[1:-1])))
        code.append(m.group())
    assert pos == len(text), f"{path.name}: cannot scan at offset {pos}"
    return Source(path.name, "".join(code), tuple(strings))


SOURCES = {p.stem: parse(p) for p in PLUGIN}
ATOM = re.compile(r"[a-z][A-Za-z0-9_@]*|'(?:\\.|[^'\\])*'")


def gen_mods() -> list[str]:
    return [name for name, src in SOURCES.items() if re.search(r"^-behaviou?r\(gen_mod\)\.", src.bare, re.M)]


def exported(src: Source) -> set[str]:
    found = set()
    for body in re.findall(r"^-export\(\[(.*?)\]\)\.", src.bare, re.M | re.S):
        found |= {f.strip() for f in body.split(",") if f.strip()}
    return found


def opt_type_clauses(src: Source) -> list[str]:
    """The argument of each mod_opt_type/1 clause, as written."""
    return [a.strip() for a in re.findall(r"^mod_opt_type\((.*?)\)\s*(?:when\b.*?)?->", src.bare, re.M)]


def _depth_step(text: str, i: int) -> tuple[int, int]:
    """(change of nesting depth, characters taken) at text[i]: brackets, braces, << >>."""
    pair = text[i:i + 2]
    if pair == "<<":
        return 1, 2
    if pair == ">>":
        return -1, 2
    return (1 if text[i] in "([{" else -1 if text[i] in ")]}" else 0), 1


def function_body(src: Source, head: str) -> str | None:
    """The text after `head(...) ->` up to the full stop that ends the function (one clause)."""
    m = re.search(rf"^{head}\([^)]*\)\s*->", src.bare, re.M)
    if not m:
        return None
    depth, i, code = 0, m.end(), src.bare
    while i < len(code):
        if code[i] == "." and depth == 0 and (i + 1 == len(code) or code[i + 1].isspace()):
            return code[m.end():i].strip()
        step, taken = _depth_step(code, i)
        depth, i = depth + step, i + taken
    raise AssertionError(f"{src.name}: {head} has no end")


def top_level_items(text: str) -> list[str]:
    """The elements of the list literal `text` ([a, {b, 1}, ...]), as written."""
    assert text.startswith("[") and text.endswith("]"), \
        f"mod_options/1 must answer a list literal for this test to read it: {text!r}"
    items, depth, start, i, inner = [], 0, 0, 0, text[1:-1]
    while i < len(inner):
        if inner[i] == "," and depth == 0:
            items.append(inner[start:i].strip())
            start = i + 1
        step, taken = _depth_step(inner, i)
        depth, i = depth + step, i + taken
    last = inner[start:].strip()
    return items + ([last] if last else [])


def declared_options(src: Source) -> list[str]:
    """The options mod_options/1 lists: `name` (required) or `{name, Default}`."""
    body = function_body(src, "mod_options")
    assert body is not None, f"{src.name}: a gen_mod without mod_options/1"
    names = []
    for item in top_level_items(body):
        name = item[1:].split(",", 1)[0].strip() if item.startswith("{") else item
        assert ATOM.fullmatch(name), f"{src.name}: mod_options/1 lists {item!r}: not an option name"
        names.append(name.strip("'"))
    return names


def read_options(module: str, src: Source, everywhere=None) -> set[str]:
    """The options the code reads, by every way ejabberd offers: gen_mod:get_opt(Opt, Opts),
    gen_mod:get_module_opt(Host, Module, Opt), and the accessors mod_MODULE_opt:Opt(Host)
    (from any of the plugin's modules)."""
    reads = set(re.findall(r"gen_mod:get_opt\(\s*(" + ATOM.pattern + ")", src.bare))
    reads |= set(re.findall(r"gen_mod:get_module_opt\([^,]+,\s*(?:\?MODULE|" + module + r")\s*,\s*("
                            + ATOM.pattern + ")", src.bare))
    for other in everywhere if everywhere is not None else SOURCES.values():
        reads |= set(re.findall(rf"\bmod_{module}_opt:({ATOM.pattern})\(", other.bare))
    return {r.strip("'") for r in reads}


@functools.cache
def rendered_ejabberd_ymls() -> dict[str, dict]:
    """ejabberd.yml as deploy renders it, for clusters unlike each other."""
    base = {"name": "t", "ejabberd_version": "24.12-3+deb13u2", "domains": ["a.test"], "admins": ["ops@a.test"],
            "cookie": {"env": "X"}}
    variants = {
        "plain": ({}, "lab1"),
        "23.01, certificates, archive, in-band registration": (
            {"ejabberd_version": "23.01-1", "certfiles": ["/etc/ejabberd/a.pem"], "mam": True,
             "in_band_registration": True}, "lab1"),
        "database": ({"database": {"type": "postgresql", "host": "db1", "password_env": "DBPW"}}, "lab1"),
        "satellite": ({}, "lab2"),
    }
    found = {}
    for label, (extra, host) in variants.items():
        data = {"cluster": {**base, **extra},
                "nodes": [{"host": "lab1"}, {"host": "lab2", "role": "satellite" if label == "satellite" else "master"}]}
        inv = parse_inventory(yaml.safe_dump(data), Path("/inv/t.yml"))
        files = managed_files(inv, inv.node(host), "10.0.0.1", Secret("S" * 40), sql_password=Secret("p" * 20))
        found[label] = yaml.safe_load(next(f for f in files if f.path == paths.EJABBERD_YML).content)
    return found


def refused(module_options: dict, declared: dict[str, set[str]]) -> list[str]:
    """What ejabberd's config load refuses: each option of a plugin module that it does not list."""
    return [f"{mod}: {opt}" for mod, opts in module_options.items() if mod in declared
            for opt in (opts or {}) if opt not in declared[mod]]


# ------------------------------------------------------------------------------------ module options

def test_the_plugin_has_a_gen_mod():
    assert gen_mods() == ["easy_cluster"]


@pytest.mark.parametrize("module", gen_mods())
def test_no_catch_all_option_clause(module):
    src = SOURCES[module]
    for arg in opt_type_clauses(src):
        assert ATOM.fullmatch(arg), (f"{module}.erl: mod_opt_type({arg}) takes any option: give each option "
                                     "the plugin reads a clause of its own")
    # an optional callback: exported exactly when it has clauses
    assert ("mod_opt_type/1" in exported(src)) == bool(opt_type_clauses(src)), module


@pytest.mark.parametrize("module", gen_mods())
def test_typed_options_are_the_listed_ones_and_the_read_ones(module):
    src = SOURCES[module]
    typed = [a.strip("'") for a in opt_type_clauses(src)]
    listed = declared_options(src)
    assert len(set(typed)) == len(typed) and len(set(listed)) == len(listed), (typed, listed)
    # ejabberd validates the listed options only, each with its mod_opt_type clause
    assert set(typed) == set(listed), f"{module}.erl: mod_opt_type/1 types {typed}, mod_options/1 lists {listed}"
    # exactly what the code reads: a listed option nobody reads is a dead one, accepted for nothing
    assert read_options(module, src) == set(listed), \
        f"{module}.erl reads {sorted(read_options(module, src))}, lists {listed}"
    if not listed:
        # nothing read: the callbacks ignore their options (a name without _ would be a read)
        for fun, arity in (("start", 2), ("reload", 3), ("depends", 2)):
            for head in re.findall(rf"^{fun}\((.*?)\)\s*->", src.code, re.M):
                args = [a.strip() for a in head.split(",")]
                assert len(args) == arity and all(a.startswith("_") for a in args[1:]), \
                    f"{module}:{fun}/{arity} reads its options ({head}) but the module lists none"


@pytest.mark.parametrize("label", list(rendered_ejabberd_ymls()))
def test_ejabberd_yml_gives_the_plugin_only_options_it_lists(label):
    conf = rendered_ejabberd_ymls()[label]
    declared = {m: set(declared_options(SOURCES[m])) for m in gen_mods()}
    assert set(declared) <= set(conf["modules"]), f"{label}: the plugin's module is not configured"
    assert not refused(conf["modules"], declared), f"{label}: ejabberd would refuse {refused(conf['modules'], declared)}"


def test_a_dead_option_would_be_refused():
    """The check above, on an option nobody reads: what ejabberd says at config load."""
    declared = {m: set(declared_options(SOURCES[m])) for m in gen_mods()}
    assert refused({"easy_cluster": {"join_wait_seconds": 30}, "mod_ping": {"x": 1}}, declared) == \
        ["easy_cluster: join_wait_seconds"]


def test_the_reader_sees_options_where_there_are_some():
    """The source reader, on a module with options (so an empty answer above means none)."""
    src = Source("x.erl", code='-export([start/2, mod_opt_type/1, mod_options/1]).\n'
                 'start(Host, _) -> gen_mod:get_module_opt(Host, ?MODULE, wait), ok.\n'
                 'mod_opt_type(wait) -> econf:pos_int();\nmod_opt_type(\'mode\') -> econf:atom().\n'
                 'mod_options(_) -> [{wait, 30}, {\'mode\', {a, [b, c]}}, {m, #{a => <<"]).">>}}, req].\n'
                 'other() -> mod_x_opt:mode(<<"h">>).\n')
    assert "mod_opt_type/1" in exported(src)
    assert opt_type_clauses(src) == ["wait", "'mode'"]
    assert declared_options(src) == ["wait", "mode", "m", "req"]
    assert read_options("x", src, [src]) == {"wait", "mode"}
    catch_all = Source("m.erl", code="mod_opt_type(_) ->\n    econf:any().\n")
    assert not ATOM.fullmatch(opt_type_clauses(catch_all)[0])


# ------------------------------------------------------------------------------------ paths

ABSOLUTE = re.compile(r"(?<![\w.$~*])(/[A-Za-z0-9._@+-]+(?:/[A-Za-z0-9._@+-]+)*)")


def plugin_paths() -> dict[str, list[str]]:
    """Every absolute path the plugin spells in a string, with where."""
    found: dict[str, list[str]] = {}
    for src in SOURCES.values():
        for line, text in src.strings:
            for path in ABSOLUTE.findall(text):
                found.setdefault(path, []).append(f"{src.name}:{line}")
    return found


def test_every_path_the_plugin_spells_is_one_of_easycluster_paths():
    ours = set(paths.all_paths().values())
    strays = {p: where for p, where in plugin_paths().items() if p not in ours and not p.startswith(OS_PATHS)}
    assert not strays, f"paths the plugin spells that easycluster.paths does not hold (add them there): {strays}"
    # the reader finds them: the join's files at least
    assert {paths.JOIN_PROGRESS, paths.JOIN_GO, paths.JOIN_PAUSE} <= set(plugin_paths())


def test_the_cookie_staging_file_is_the_plugins():
    """The plugin names it relative to the node's home (the Mnesia directory)."""
    name = re.search(r'-define\(COOKIE_STAGING_NAME,\s*"([^"]+)"\)', SOURCES["easy_cluster_cookie"].code).group(1)
    assert paths.COOKIE_STAGING == f"{paths.MNESIA_DIR}/{name}"


@pytest.mark.parametrize("path", sorted(p for p in plugin_paths() if not p.startswith(OS_PATHS)))
def test_tests_and_load_take_the_plugins_paths_from_easycluster_paths(path):
    spelled = [str(f.relative_to(REPO)) for d in ("tests", "load", "bench") for f in sorted((REPO / d).glob("*.py"))
               if f.name != Path(__file__).name and path in f.read_text()]
    assert not spelled, f"{path} is spelled in {spelled}: import it from easycluster.paths"
