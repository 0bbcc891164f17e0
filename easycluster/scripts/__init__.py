"""The shell scripts easycluster runs on its hosts (the *.sh beside this file), filled in one way.

`render(name, **params)` gives the text Host.script sends on stdin: the parameters as shell
variable assignments (values shell-quoted), then lib.sh (the ec_* functions, once), then
NAME.sh. Each script declares its parameters in comment lines `# params: NAME ...`
(UPPER_CASE shell names); so does lib.sh, for every script. A declared name that is a path
of easycluster.paths is filled from there; every other one is the caller's, passed as its
lower-case keyword (`render("backup", keep=3)` sets KEEP). A parameter missing or not
declared is an error naming the script and the parameter.

Values: str and int as they are, bool as 1 or 0, a list or tuple of those as a bash array.
Parameters travel inside the script, never on a command line; a secret never travels in a
script at all (a Secret is refused): it goes as a file's contents over SFTP (Host.put_bytes).
"""

from __future__ import annotations

import functools
import re
import shlex
from importlib import resources

from ..paths import all_paths
from ..secrets import Secret

LIBRARY = "lib"
_PARAMS = re.compile(r"^# params:(.*)$", re.MULTILINE)
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class ScriptError(ValueError):
    """A script asked for in a way it cannot be rendered (a bug of the caller, not of a host)."""


@functools.cache
def source(name: str) -> str:
    """The text of scripts/NAME.sh."""
    try:
        return (resources.files(__package__) / f"{name}.sh").read_text()
    except FileNotFoundError:
        raise ScriptError(f"no script {name}.sh in easycluster/scripts") from None


@functools.cache
def declared(name: str) -> tuple[str, ...]:
    """The parameters NAME.sh declares, in order."""
    names: list[str] = []
    for line in _PARAMS.findall(source(name)):
        for word in line.split():
            if not _NAME.match(word):
                raise ScriptError(f"{name}.sh: parameter {word!r} is not an UPPER_CASE shell name")
            if word not in names:
                names.append(word)
    return tuple(names)


def names() -> list[str]:
    """Every script that can be rendered (the library is not one)."""
    return sorted(p.name[:-3] for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".sh") and p.name[:-3] != LIBRARY)


def render(name: str, **params) -> str:
    """The script NAME.sh, ready for Host.script: parameters, library, script."""
    if name == LIBRARY:
        raise ScriptError(f"{LIBRARY}.sh is the library: it comes with every script, not alone")
    text = source(name)
    wanted = list(dict.fromkeys(declared(LIBRARY) + declared(name)))
    paths = all_paths()
    for key in params:
        if key != key.lower() or key.upper() not in wanted or key.upper() in paths:
            raise ScriptError(f"{name}.sh: unknown parameter {key!r}"
                              + (f" (the path {key.upper()} comes from easycluster.paths)" if key.upper() in paths
                                 else f" (it declares {', '.join(w.lower() for w in wanted if w not in paths) or 'none'})"))
    lines = [f"# easycluster/scripts/{name}.sh, rendered: its parameters, {LIBRARY}.sh, then the script"]
    for var in wanted:
        if var in paths:
            value = paths[var]
        elif var.lower() in params:
            value = params[var.lower()]
        else:
            raise ScriptError(f"{name}.sh: missing parameter {var.lower()!r}")
        lines.append(f"{var}={_shell_value(name, var, value)}")
    return "\n".join(lines) + "\n\n" + source(LIBRARY).rstrip("\n") + "\n\n" + text


def _shell_value(script: str, var: str, value) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(_word(script, var, v) for v in value) + ")"
    return _word(script, var, value)


def _word(script: str, var: str, value) -> str:
    if isinstance(value, Secret):
        raise ScriptError(f"{script}.sh: parameter {var.lower()!r} is a secret: secrets never travel in "
                          "scripts (upload them as a file: Host.put_bytes)")
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "\0" in value:
            raise ScriptError(f"{script}.sh: parameter {var.lower()!r} holds a NUL byte (no shell value can)")
        return shlex.quote(value)
    raise ScriptError(f"{script}.sh: parameter {var.lower()!r}: a {type(value).__name__} has no shell value "
                      "(str, int, bool, or a list of them)")
