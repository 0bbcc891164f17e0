"""The remote shell scripts (easycluster/scripts/*.sh) and their one renderer. No lab needed.

shellcheck must be installed (CI installs it: scripts/system-packages.sh): without it these
tests fail, they do not skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources

import pytest

from easycluster import paths, scripts
from easycluster.scripts import ScriptError, render
from easycluster.secrets import Secret

SCRIPT_DIR = resources.files("easycluster.scripts")
SH_FILES = sorted(p.name for p in SCRIPT_DIR.iterdir() if p.name.endswith(".sh"))
LIBRARY = (SCRIPT_DIR / "lib.sh").read_text()


def shellcheck(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.fail("shellcheck is not installed: apt-get install shellcheck (scripts/system-packages.sh does)")
    return subprocess.run([exe, "--severity=style", "--format=gcc", *args], input=stdin, capture_output=True,
                          text=True, cwd=str(SCRIPT_DIR))


def test_there_are_scripts():
    assert "lib.sh" in SH_FILES and len(SH_FILES) > 10, SH_FILES
    assert scripts.names() == sorted(f[:-3] for f in SH_FILES if f != "lib.sh")


@pytest.mark.parametrize("name", SH_FILES)
def test_shellcheck_clean(name):
    text = (SCRIPT_DIR / name).read_text()
    assert text.splitlines()[0] == "# shellcheck shell=bash", f"{name}: the first line names the shell"
    r = shellcheck("-x", "--source-path=SCRIPTDIR", name)
    assert r.returncode == 0, f"shellcheck {name}:\n{r.stdout}{r.stderr}"


def sample(name: str) -> dict:
    """Parameters for NAME.sh: a list for each one it uses as an array, else a string."""
    text = (SCRIPT_DIR / f"{name}.sh").read_text()
    out = {}
    for var in scripts.declared(name):
        if var in paths.all_paths():
            continue
        out[var.lower()] = ["one", "two words"] if re.search(r"\$\{" + var + r"\[@\]\}", text) else "x y"
    return out


@pytest.mark.parametrize("name", scripts.names())
def test_rendered_script_is_shellcheck_clean(name):
    """What a host runs (parameters, the library, the script) checked whole: the library's
    functions and the parameters' assignments are known, and every parameter is used."""
    r = shellcheck("--shell=bash", "-", stdin=render(name, **sample(name)))
    assert r.returncode == 0, f"shellcheck of the rendered {name}.sh:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("name", scripts.names())
def test_library_included_once(name):
    text = render(name, **sample(name))
    assert text.count(LIBRARY.rstrip("\n")) == 1
    assert len(re.findall(r"^ec_log_tail\(\) \{", text, re.MULTILINE)) == 1
    # parameters first, then the library, then the script
    assert text.index("\nEPMD_REBIND=") < text.index(LIBRARY.rstrip("\n")) < text.index(
        (SCRIPT_DIR / f"{name}.sh").read_text())


@pytest.mark.parametrize("name", SH_FILES)
def test_scripts_spell_no_easycluster_path(name):
    """Paths come from easycluster.paths, as parameters."""
    text = (SCRIPT_DIR / name).read_text()
    spelled = [p for p in paths.all_paths().values() if p in text]
    assert not spelled, f"{name} spells {spelled}: declare the path's name as a parameter instead"


@pytest.mark.parametrize("name", scripts.names())
def test_declared_parameters(name):
    for var in scripts.declared(name):
        if var not in paths.all_paths():
            assert var not in ("PATH", "HOME", "IFS", "SECONDS", "RANDOM", "PWD", "LC_ALL"), var


# --------------------------------------------------------------------------- the renderer, on a script of the test's own

PROBE = """# shellcheck shell=bash
# params: VALUE ITEMS
# params: JOIN_GO
printf '<%s>\\n' "$VALUE"
printf '[%s]\\n' "${ITEMS[@]}"
printf 'go=%s\\n' "$JOIN_GO"
"""


@pytest.fixture
def probe(monkeypatch):
    real = scripts.source

    def source(name: str) -> str:
        return PROBE if name == "test_probe" else real(name)
    monkeypatch.setattr(scripts, "source", source)
    scripts.declared.cache_clear()
    yield
    scripts.declared.cache_clear()


def run(text: str) -> str:
    r = subprocess.run(["bash", "-c", 'eval "$(cat)"'], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("value, shown", [
    ("plain", "plain"),
    ("", ""),
    ("two words", "two words"),
    ("it's", "it's"),
    ('say "hi"', 'say "hi"'),
    ("$(touch /nonexistent/pwned)", "$(touch /nonexistent/pwned)"),
    ("`id`", "`id`"),
    ("$HOME ${PATH} $1", "$HOME ${PATH} $1"),
    ("a;b && c | d > e", "a;b && c | d > e"),
    ("*", "*"),
    ("-n", "-n"),
    ("back\\slash", "back\\slash"),
    ("line\nbreak", "line\nbreak"),
    ("tab\there", "tab\there"),
    ("ünïcödé ✓", "ünïcödé ✓"),
    ('{"seed": "ejabberd@lab1", "at_boot": true}', '{"seed": "ejabberd@lab1", "at_boot": true}'),
    (0, "0"),
    (4369, "4369"),
    (True, "1"),
    (False, "0"),
])
def test_values_arrive_unchanged(probe, value, shown):
    out = run(render("test_probe", value=value, items=[value, "x"]))
    assert out == f"<{shown}>\n[{shown}]\n[x]\ngo={paths.JOIN_GO}\n"


@pytest.mark.parametrize("items, shown", [
    ([], ""),                       # printf with no argument still prints once
    (["a"], "[a]\n"),
    (("a b", "c"), "[a b]\n[c]\n"),
    (["", "'", "$x"], "[]\n[']\n[$x]\n"),
    ([1, True], "[1]\n[1]\n"),
])
def test_arrays(probe, items, shown):
    out = run(render("test_probe", value="v", items=items))
    assert out == "<v>\n" + (shown or "[]\n") + f"go={paths.JOIN_GO}\n"


@pytest.mark.parametrize("params, message", [
    ({"items": []}, "test_probe.sh: missing parameter 'value'"),
    ({"value": "v"}, "test_probe.sh: missing parameter 'items'"),
    ({"value": "v", "items": [], "colour": "red"}, "test_probe.sh: unknown parameter 'colour'"),
    ({"value": "v", "items": [], "VALUE": "v"}, "test_probe.sh: unknown parameter 'VALUE'"),
    ({"value": "v", "items": [], "join_go": "/tmp/x"}, "test_probe.sh: unknown parameter 'join_go' (the path JOIN_GO"),
    ({"value": None, "items": []}, "test_probe.sh: parameter 'value': a NoneType has no shell value"),
    ({"value": 1.5, "items": []}, "test_probe.sh: parameter 'value': a float has no shell value"),
    ({"value": "v", "items": [["nested"]]}, "test_probe.sh: parameter 'items': a list has no shell value"),
    ({"value": "a\0b", "items": []}, "test_probe.sh: parameter 'value' holds a NUL byte"),
])
def test_parameter_errors(probe, params, message):
    with pytest.raises(ScriptError) as err:
        render("test_probe", **params)
    assert message in str(err.value)


def test_a_secret_never_goes_into_a_script(probe):
    with pytest.raises(ScriptError, match="secret") as err:
        render("test_probe", value=Secret("hunter2-cookie"), items=[])
    assert "hunter2" not in str(err.value)
    with pytest.raises(ScriptError, match="secret"):
        render("test_probe", value="v", items=[Secret("hunter2-cookie")])


def test_a_path_parameter_comes_from_paths():
    text = render("join_turn")
    assert f"\nJOIN_GO={paths.JOIN_GO}\n" in text
    assert f"\nRESTART_PENDING={paths.RESTART_PENDING}\n" in text   # the library's


@pytest.mark.parametrize("name, message", [
    ("lib", "lib.sh is the library"),
    ("no_such_script", "no script no_such_script.sh"),
])
def test_unknown_scripts(name, message):
    with pytest.raises(ScriptError, match=message):
        render(name)
