"""easycluster as operators install it: a wheel built from the repository, installed into a
clean virtualenv, used from an empty directory with no checkout in sight.

The wheel must carry everything the product reads at run time (templates, the plugin's
sources, the remote scripts, the tasks) and nothing of the test equipment (the lab, tests).
Then, against the session's lab: a one-line fabfile plans a deploy (`fab deploy --dry`) and
the console script reads the cluster's status (`easycluster status`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, fab

FABFILE = "from easycluster.tasks import ns  # noqa: F401\n"


def _run(argv: list, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the working tree (a build/ folder left in the checkout could put
    files into the wheel that the tree no longer has)."""
    out = tmp_path_factory.mktemp("wheel")
    tree = tmp_path_factory.mktemp("tree") / "easycluster"
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info",
                                                               "__pycache__", ".pytest_cache", "secrets"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, tree])
    (built,) = out.glob("easycluster-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A clean virtualenv holding the wheel and its dependencies, nothing of the checkout."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", root])
    _run([root / "bin/pip", "install", "-q", "--disable-pip-version-check", wheel], timeout=900)
    return root


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """An operator's directory: a one-line fabfile and nothing else."""
    where = tmp_path_factory.mktemp("ops")
    (where / "fabfile.py").write_text(FABFILE)
    return where


@pytest.fixture(scope="module")
def deployed_cluster(lab):
    """The session's lab with its 3-node cluster as the lab's inventory describes it."""
    fab("deploy", timeout=600)
    return lab


def clean_env(**extra: str) -> dict:
    """No variable of ours, no PYTHONPATH: what the clean virtualenv finds is what it has."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EASYCLUSTER_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def test_wheel_carries_the_product_and_not_the_lab(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("easycluster/templates/ejabberd.yml.j2", "easycluster/templates/ejabberd.default.j2",
                     "easycluster/plugin/easy_cluster.erl", "easycluster/plugin/mod_offline_easy.erl",
                     "easycluster/tasks/__init__.py", "easycluster/tasks/cluster.py", "easycluster/cli.py"):
        assert expected in names, f"{expected} missing from {wheel.name}"
    sources = {p.name for p in (REPO / "plugin").glob("*.erl")}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("easycluster/plugin/") and n.endswith(".erl")} == sources
    scripts = {p.name for p in (REPO / "easycluster" / "scripts").glob("*.sh")}
    assert "lib.sh" in scripts
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("easycluster/scripts/") and n.endswith(".sh")} == scripts
    steps = {p.name for p in (REPO / "easycluster" / "sql").glob("*.sql")}
    assert "pg-25.03.sql" in steps
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("easycluster/sql/") and n.endswith(".sql")} == steps
    assert not [n for n in names if n.startswith(("easycluster_lab/", "tests/", "lab/", "bench/", "load/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "easycluster = easycluster.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_console_script_outside_any_checkout(venv, elsewhere):
    version = _run([venv / "bin/easycluster", "--version"], cwd=elsewhere, env=clean_env()).stdout
    assert version.startswith("easycluster ")
    listing = _run([venv / "bin/easycluster", "--list"], cwd=elsewhere, env=clean_env()).stdout
    for name in ("deploy", "add-master", "remove-node", "forget-node", "status", "rolling-restart", "heal"):
        assert f"  {name} " in listing, listing
    assert "lab." not in listing, "the product's install must not carry the lab's tasks"
    # the default inventory is ./inventory.yml, and its absence is a clear error
    proc = subprocess.run([venv / "bin/easycluster", "status"], cwd=elsewhere, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "inventory inventory.yml not found" in proc.stderr and "Traceback" not in proc.stderr


def test_one_line_fabfile_plans_against_the_lab(venv, elsewhere, deployed_cluster):
    lab = deployed_cluster
    proc = _run([venv / "bin/fab", "deploy", "--dry", "--inventory", lab.inventory], cwd=elsewhere,
                env=clean_env())
    # the cluster as deployed from the checkout: the installed package plans exactly nothing
    assert proc.stdout.splitlines()[0] == "no changes: the cluster matches the inventory", proc.stdout


def test_easycluster_status_against_the_lab(venv, elsewhere, deployed_cluster):
    lab = deployed_cluster
    proc = _run([venv / "bin/easycluster", "status", "--json", "-i", lab.inventory], cwd=elsewhere,
                env=clean_env())
    health = json.loads(proc.stdout)
    assert health["healthy"] is True, health
    # and through $EASYCLUSTER_INVENTORY, the table an operator reads
    table = _run([venv / "bin/easycluster", "status"], cwd=elsewhere,
                 env=clean_env(EASYCLUSTER_INVENTORY=str(lab.inventory))).stdout
    for host in ("lab1", "lab2", "lab3"):
        assert f"ejabberd@{host}" in table, table
