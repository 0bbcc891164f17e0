"""The plugin's backup and rollback cover every module of it (pure: no lab).

The plugin is several Erlang modules (plugin/*.erl: one beam each) with its sources beside
them (their hash is what the facts read). When deploy replaces it, configure.sh keeps the
previous build whole; when the new configuration does not start, restore_files.sh puts that
build back whole: every old beam, and no beam only the new build had.

Here nodectl.configure and nodectl.restore_and_start run for real against a host that is this
machine: each rendered script runs in bash, with every on-host path moved under a temporary
directory, dpkg-query answering the packages the shared build was made with, and the unit's
stop and start (ec_stop, ec_start) recorded instead of run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from easycluster import nodectl, paths, scripts
from easycluster.errors import RemoteError
from easycluster.remote import Result
from easycluster.scripts import source

BUILT_WITH = "24.12-3+deb13u2 1:27.3.4.1+dfsg-1 "
LIBRARY = source("lib").rstrip("\n")
STUBS = """
dpkg-query() { printf '%s' '""" + BUILT_WITH + """'; }
erlc() { echo "erlc must not run: the shared build matches" >&2; return 1; }
systemctl() { echo "systemctl $*" >> "$EC_LOG"; }
nft() { echo "nft $*" >> "$EC_LOG"; }
ec_stop() { echo "ec_stop" >> "$EC_LOG"; }
ec_start() { echo "ec_start $*" >> "$EC_LOG"; }
"""


class LocalHost:
    """nodectl's Host, on this machine: scripts run in bash (the stubs above after the
    library), uploads are local writes."""
    name = "lab1"

    def __init__(self, log: Path):
        self.log = log

    def script(self, body: str, *, check: bool = True, what: str | None = None, **_kwargs) -> Result:
        assert body.count(LIBRARY) == 1
        body = body.replace(LIBRARY, LIBRARY + "\n" + STUBS)
        r = subprocess.run(["bash", "-c", 'eval "$(cat)"'], input=body, capture_output=True, text=True,
                           timeout=60, env={"EC_LOG": str(self.log), "PATH": "/usr/bin:/bin"})
        if check and r.returncode != 0:
            raise RemoteError(self.name, what or "script failed", r.stdout + r.stderr)
        return Result(r.returncode, r.stdout, r.stderr)

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        Path(remote_path).parent.mkdir(parents=True, exist_ok=True)
        Path(remote_path).write_bytes(data)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Every on-host path under tmp_path/root."""
    root = tmp_path / "root"
    moved = {name: f"{root}{value}" for name, value in paths.all_paths().items()}
    monkeypatch.setattr(scripts, "all_paths", lambda: moved)
    Path(moved["STAGING_TEMPLATE"]).parent.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "commands.log"
    log.write_text("")
    return LocalHost(log), root


def tree(directory: Path) -> dict[str, str]:
    """ebin/ and src/ of the plugin's directory: relative path -> content."""
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def shared_build(tmp_path: Path, beams: dict[str, str]) -> nodectl.PluginBuild:
    """The new build as another host compiled it (a tar of its beams, as configure.sh prints it)."""
    ebin = tmp_path / "built"
    ebin.mkdir()
    for name, content in beams.items():
        (ebin / name).write_text(content)
    tar = subprocess.run(["tar", "-C", str(ebin), "-cf", "-", "."], capture_output=True, check=True).stdout
    return nodectl.PluginBuild(BUILT_WITH, tar)


OLD = {"ebin/easy_cluster.beam": "old A", "ebin/easy_cluster_join.beam": "old B",
       "ebin/easy_cluster_old_only.beam": "old C",
       "src/easy_cluster.erl": "old A source", "src/easy_cluster_join.erl": "old B source",
       "src/easy_cluster_old_only.erl": "old C source"}
NEW_BEAMS = {"easy_cluster.beam": "new A", "easy_cluster_join.beam": "new B", "easy_cluster_new_only.beam": "new D"}


def test_a_rollback_puts_back_every_beam_of_the_previous_plugin(host, tmp_path):
    h, root = host
    plugin = Path(f"{root}{paths.PLUGIN_DIR}")
    for rel, content in OLD.items():
        (plugin / rel).parent.mkdir(parents=True, exist_ok=True)
        (plugin / rel).write_text(content)

    replaced, build = nodectl.configure(h, [], True, shared_build(tmp_path, NEW_BEAMS))
    assert build is None                                    # the shared build was installed, not compiled
    installed = tree(plugin)
    assert {k: v for k, v in installed.items() if k.startswith("ebin/")} == \
        {f"ebin/{name}": content for name, content in NEW_BEAMS.items()}
    assert "src/easy_cluster_old_only.erl" not in installed and "src/easy_cluster.erl" in installed
    assert installed["src/easy_cluster.erl"] != OLD["src/easy_cluster.erl"]   # the package's own sources now
    [(path, backup)] = replaced                             # the plugin is one backup, whole
    assert path == str(plugin) and backup.endswith(".tar") and Path(backup).exists()

    nodectl.restore_and_start(h, replaced, 5222)
    assert tree(plugin) == OLD                              # A, B, C and their sources; no D
    assert h.log.read_text().splitlines() == ["ec_stop", f"ec_start 5222 {nodectl.START_BOUND}"]


def test_a_first_plugin_has_nothing_to_keep(host, tmp_path):
    h, root = host
    replaced, _ = nodectl.configure(h, [], True, shared_build(tmp_path, NEW_BEAMS))
    assert replaced == []
    assert sorted(p.name for p in Path(f"{root}{paths.PLUGIN_EBIN}").iterdir()) == sorted(NEW_BEAMS)
