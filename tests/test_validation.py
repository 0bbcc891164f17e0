"""Bad input an operator can give besides the inventory's own keys (test_inventory.py): the
cookie's value, what the templates need, `--host`, an unreachable host. Each is refused with
`error: ...` and exit 1, before any host is touched (the only "host" here is a closed port on
loopback), and a bad cookie is never echoed.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from conftest import FAB, REPO
from easycluster import render
from easycluster.errors import EasyClusterError
from easycluster.inventory import parse_inventory

NOBODY = "127.0.0.9"   # loopback, nothing listens on port 1: refused at once


@pytest.fixture
def inventory(tmp_path):
    """An inventory whose one node is a closed port on loopback, its cookie from $VAL_COOKIE."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host {NOBODY}\n  Port 1\n  User root\n  StrictHostKeyChecking yes\n"
                          f"  UserKnownHostsFile {tmp_path}/known_hosts\n")
    data = {"cluster": {"name": "v", "ejabberd_version": "23.01-1", "domains": ["v.test"],
                        "cookie": {"env": "VAL_COOKIE"}},
            "ssh": {"config": str(ssh_config)},
            "nodes": [{"host": NOBODY, "name": "ejabberd@nobody"}]}
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def fab(inventory, *args, cookie: str | None = "G" * 40) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VAL_COOKIE", "EASYCLUSTER_INVENTORY")}
    if cookie is not None:
        env["VAL_COOKIE"] = cookie
    return subprocess.run([str(FAB), *args, "--inventory", str(inventory)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("cookie, message", [
    (None, "environment variable VAL_COOKIE is not set"),
    ("", "environment variable VAL_COOKIE is not set"),
    ("short-cookie-123", "the cookie is shorter than 20 characters"),
    ("x" * 19, "the cookie is shorter than 20 characters"),
    ("has spaces in the cookie value!!", "characters Erlang rejects"),
    ("quote'in-the-cookie-value-xxxxx", "characters Erlang rejects"),
    ("dollar$and/slash-in-the-cookie-x", "characters Erlang rejects"),
    ("newline\nin-the-cookie-value-xxxx", "characters Erlang rejects"),
    ("trailing-newline-in-the-cookie-xx\n", "characters Erlang rejects"),
])
def test_a_bad_cookie_in_the_environment_is_refused_and_not_echoed(inventory, cookie, message):
    proc = fab(inventory, "plan", cookie=cookie)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "preflight" not in proc.stderr   # no host was asked
    if cookie:
        assert cookie not in proc.stdout + proc.stderr


@pytest.mark.parametrize("task", ["add-master", "remove-node", "forget-node"])
def test_a_host_not_in_the_inventory_is_refused(inventory, task):
    proc = fab(inventory, task, "--host", "lab9")
    assert proc.returncode == 1
    assert f"error: 'lab9' is not a node of {inventory} (nodes: {NOBODY})" in proc.stderr, proc.stderr
    assert "unreachable" not in proc.stderr   # refused before any connection


def test_an_unreachable_host_is_named_in_the_preflight_table_with_what_to_do(inventory):
    proc = fab(inventory, "plan")
    assert proc.returncode == 1
    row = next(line for line in proc.stderr.splitlines() if line.startswith(NOBODY))
    assert " ssh " in row and "unreachable over SSH" in row and "check the host is up" in row, proc.stderr


@pytest.mark.parametrize("template, missing", [
    ("{{ cluster.no_such_key }}", "no_such_key"),
    ("{{ node.rack }}", "rack"),
    ("{{ datacenter }}", "datacenter"),
    ("{% for d in cluster.domains %}{{ d.tld }}{% endfor %}", "tld"),
])
def test_a_template_variable_the_inventory_lacks_is_an_operator_error(tmp_path, monkeypatch, template, missing):
    (tmp_path / "t.j2").write_text(template)
    monkeypatch.setattr(render, "TEMPLATES", tmp_path)
    inv = parse_inventory(yaml.safe_dump({"cluster": {"name": "v", "ejabberd_version": "23.01-1",
                                                      "domains": ["v.test"], "cookie": {"env": "C"}},
                                          "nodes": [{"host": "h1"}]}), tmp_path / "inv.yml")
    with pytest.raises(EasyClusterError) as exc:
        render.render("t.j2", cluster=inv.cluster, node=inv.nodes[0])
    assert str(exc.value).startswith("templates/t.j2: ") and missing in str(exc.value)
    assert "the inventory lacks it" in str(exc.value)
