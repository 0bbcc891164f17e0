"""`fab smoke` keeps its throwaway password off every command line on the host (pure: the
fleet is a fake that records what would be sent; the scripts it sends run here, in bash, with
every command they call replaced by a recorder).

A secret on a command line is readable by every user of the host (ps, /proc/PID/cmdline) for
as long as the command runs, and lands in audit logs: the password goes as a file's contents
(SFTP) and is read by the Erlang VM of the ejabberd user, never by the shell.
"""

from __future__ import annotations

import contextlib

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from easycluster import paths
from easycluster.ops import smoke
from easycluster.errors import RemoteError
from easycluster.inventory import parse_inventory
from easycluster.remote import Result
from easycluster.scripts import source

INVENTORY = {"cluster": {"name": "t", "ejabberd_version": "24.12-3+deb13u2", "domains": ["a.test"],
                         "admins": [], "cookie": {"env": "X"}},
             "nodes": [{"host": "lab1"}, {"host": "lab2"}, {"host": "lab3"}]}


@dataclass
class FakeHost:
    name: str
    answer: str = "registered\n"
    sent: list = field(default_factory=list)       # ("put", path, data) | ("script", name, body)

    @property
    def address(self) -> str:
        return "10.0.0.1"

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        self.sent.append(("put", remote_path, data))

    def script(self, body: str, **_kwargs) -> Result:
        name = re.match(r"# easycluster/scripts/(\w+)\.sh, rendered", body).group(1)
        self.sent.append(("script", name, body))
        return Result(0, self.answer if name == "node_call" else "", "")

    def run(self, command: str, **_kwargs) -> Result:
        raise AssertionError(f"smoke runs scripts only, not {command!r}")


class FakeFleet:
    def __init__(self, hosts: dict[str, FakeHost]):
        self.hosts = hosts

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getitem__(self, host: str) -> FakeHost:
        return self.hosts[host]


@dataclass
class NodeSeen:
    name: str
    host: str
    running: bool = True
    reachable: bool = True


@pytest.fixture
def run_smoke(monkeypatch):
    """smoke.smoke on a 3-node inventory with fake hosts; returns (hosts, the first host's
    records, the password, the outcome: a report or the exception)."""
    def run(answer: str = "registered\n", long_names: bool = False):
        data = dict(INVENTORY)
        if long_names:
            data["nodes"] = [{"host": n["host"], "name": f"ejabberd@{n['host']}.example.org"} for n in data["nodes"]]
        inv = parse_inventory(yaml.safe_dump(data), Path("/inv/t.yml"))
        hosts = {n.host: FakeHost(n.host, answer) for n in inv.nodes}
        class FakeOperation:   # the operation layer, with the fake fleet and every node seen running
            fleet = FakeFleet(hosts)

            def observe(self):
                return type("H", (), {"nodes": [NodeSeen(n.name, n.host) for n in inv.nodes]})()

        @contextlib.contextmanager
        def fake_operation(_inv, _name, **_kw):
            yield FakeOperation()
        monkeypatch.setattr(smoke, "operation", fake_operation)
        seen = {}

        async def exchange(targets, password, port, tls):
            seen["password"] = password
            return smoke.SmokeReport(logins={node.name: (True, 0.01, "") for node, _, _ in targets})

        monkeypatch.setattr(smoke, "_exchange", exchange)
        try:
            outcome = smoke.smoke(inv, out=lambda *a: None)
        except RemoteError as exc:
            outcome = exc
        return hosts, hosts["lab1"].sent, seen.get("password"), outcome
    return run


def test_the_password_goes_by_sftp_only(run_smoke):
    hosts, sent, password, report = run_smoke()
    assert report.passed
    uploads = [(path, data) for kind, path, data in sent if kind == "put"]
    assert len(uploads) == 1 and uploads[0][1] == password.encode()
    assert uploads[0][0].startswith(paths.SMOKE_PASSWORD_NODE + ".")      # the ejabberd user's home
    scripts = [(name, body) for kind, name, body in sent if kind == "script"]
    assert [name for name, _ in scripts] == ["smoke_stage", "node_call", "smoke_unregister"]
    for name, body in scripts:
        assert password not in body, f"{name}.sh carries the password"
        assert uploads[0][0] in body, f"{name}.sh does not name the password's file"
    assert all(not h.sent for h in hosts.values() if h.name != "lab1")


def test_registration_happens_inside_the_node_from_the_file(run_smoke):
    _, sent, password, _ = run_smoke()
    expr = smoke.register_expr("ejabberd@lab1", ["u1", "u2"], "a.test", "/var/lib/ejabberd/f")
    assert 'file:read_file(F)' in expr and "file:delete(F)" in expr and "ejabberd_admin, register" in expr
    assert "'ejabberd@lab1'" in expr and '<<"u1"/utf8>>, <<"u2"/utf8>>' in expr
    node_call = next(body for kind, name, body in sent if kind == "script" and name == "node_call")
    assert "\nNAME_FLAG=-sname\n" in node_call and "'ejabberd@lab1'" in node_call
    _, sent, _, _ = run_smoke(long_names=True)
    node_call = next(body for kind, name, body in sent if kind == "script" and name == "node_call")
    assert "\nNAME_FLAG=-name\n" in node_call and "'ejabberd@lab1.example.org'" in node_call


def test_a_failed_registration_fails_and_still_cleans_up(run_smoke):
    _, sent, _, outcome = run_smoke(answer='[{<<"easycluster-smoke-x-1">>,"Unknown virtual host"}]\n')
    assert isinstance(outcome, RemoteError) and "Unknown virtual host" in str(outcome)
    assert [name for kind, name, _ in sent if kind == "script"][-1] == "smoke_unregister"


# ------------------------------------------------------------------------------------ the command lines

RECORDED = ("chown", "chmod", "rm", "ejabberdctl", "su", "erl", "cat", "install", "mv", "cp")


def run_recorded(prefix: str, text: str, tmp_path: Path) -> list[str]:
    """Run `prefix` (a rendered script's parameters and library) then the script `text` here,
    with every external command replaced by a function that records its arguments (cat reads
    its file, so what a script passes on from it shows); one line per command run."""
    log = tmp_path / "commands.log"
    log.write_text("")
    stubs = "PATH=/nonexistent\n" + "".join(
        f"{c}() {{ printf '%s\\n' \"{c} $*\" >> \"$EC_LOG\"; }}\n" for c in RECORDED if c != "cat")
    stubs += ('cat() { printf \'%s\\n\' "cat $*" >> "$EC_LOG"; local l; '
              'while IFS= read -r l || [ -n "$l" ]; do printf \'%s\\n\' "$l"; done < "$1"; }\n'
              'command_not_found_handle() { printf \'%s\\n\' "UNKNOWN $*" >> "$EC_LOG"; return 127; }\n')
    subprocess.run(["bash", "-c", prefix + stubs + text], env={"EC_LOG": str(log)}, cwd=tmp_path,
                   capture_output=True, text=True, timeout=30)
    lines = log.read_text().splitlines()
    assert not [line for line in lines if line.startswith("UNKNOWN")], f"unrecorded commands: {lines}"
    return lines


def command_lines(body: str, script: str, password_file: Path, tmp_path: Path) -> list[str]:
    """The commands the rendered `body` of scripts/SCRIPT.sh runs, with PASSWORD_FILE at
    `password_file`."""
    text = source(script)
    assert body.endswith(text)
    prefix = re.sub(r"^PASSWORD_FILE=.*$", f"PASSWORD_FILE={password_file}", body[:-len(text)], flags=re.M)
    return run_recorded(prefix, text, tmp_path)


def test_no_command_the_smoke_scripts_run_carries_the_password(run_smoke, tmp_path):
    _, sent, password, _ = run_smoke()
    upload = tmp_path / "password"
    ran = {}
    for kind, name, body in sent:
        if kind == "script":
            upload.write_text(password)          # as the SFTP upload left it
            ran[name] = command_lines(body, name, upload, tmp_path)
    for name, lines in ran.items():
        assert not [line for line in lines if password in line], f"{name}.sh: {lines}"
    # what ran: the file handed to ejabberd, the hidden node (its -eval: the file's name), the cleanup
    assert ran["smoke_stage"] == [f"chown ejabberd:ejabberd {upload}", f"chmod 400 {upload}"]
    assert len(ran["node_call"]) == 1 and ran["node_call"][0].startswith("su -s /bin/sh -c ")
    assert "file:read_file(F)" in ran["node_call"][0]
    assert ran["smoke_unregister"][0] == f"rm -f {upload}"
    assert [line.split()[:2] for line in ran["smoke_unregister"][1:]] == [["ejabberdctl", "unregister"]] * 3


def test_the_recorder_sees_a_password_passed_as_an_argument(tmp_path):
    """What the check above catches: the password read by the shell and passed on, as the
    former smoke_register.sh did (`ejabberdctl register "$user" "$DOMAIN" "$password"`)."""
    upload = tmp_path / "password"
    upload.write_text("s3cret\n")
    leaky = 'password=$(cat "$PASSWORD_FILE")\nejabberdctl register u a.test "$password" >/dev/null\n'
    assert run_recorded(f"PASSWORD_FILE={upload}\n", leaky, tmp_path) == [
        f"cat {upload}", "ejabberdctl register u a.test s3cret"]
