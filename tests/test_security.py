"""The cookie on a real lab ("sec", 3 hosts): it never leaks, and rotate-cookie changes it under
live XMPP clients without downtime.

The cluster is lab1+lab2; lab3 is provisioned by a join that fails (and is rolled back), so it
stays outside the cluster as a host with Erlang from which to probe with a cookie. While the
module runs, `ps` is polled on every host; every cookie the module sees must be absent from
everything printed, every file outside the cookie files, and every command line captured.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import os
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from easycluster import xmpp
from conftest import FAB, JOIN_PAUSE, REPO, fab, fab_paused_in_join, own_lab, ssh
from easycluster_lab import Lab

pytestmark = pytest.mark.lab

LAB = "sec"
HOSTS = ["lab1", "lab2", "lab3"]
CLUSTER = ["lab1", "lab2"]
HOST_COOKIE = "/var/lib/ejabberd/.erlang.cookie"
# where the toolkit (or ejabberd) writes on hosts; besides these, the hosts' whole disks are
# searched locally through the lab's overlay upper layers
HOST_DIRS = ["/var/backups", "/var/lib/easycluster", "/var/log/ejabberd", "/root", "/etc", "/tmp",
             "/run", "/var/lib/ejabberd", "/usr/local/lib/easy_cluster"]


class PsCapture:
    """`ps -eo args` on every host, every 50 ms, for as long as the module runs (one ssh per host)."""

    def __init__(self, lab: Lab, hosts: list[str], directory: Path):
        self.files = {h: directory / f"ps-{h}.txt" for h in hosts}
        self.procs = []
        for h, path in self.files.items():
            out = path.open("wb")
            self.procs.append(subprocess.Popen(
                ["ssh", "-F", str(lab.ssh_config), h,
                 # new lines only (awk), or the capture grows by megabytes a minute; the loop
                 # ends when the pipe does. Debian's awk is mawk, which reads its input in
                 # blocks unless -W interactive: the capture would lag by a block of ps output
                 "while ps -eww -o args; do sleep 0.05; done | mawk -W interactive '!seen[$0]++ {print; fflush()}'"],
                stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))

    def text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.files.values())

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
            p.wait(timeout=10)


class Run:
    """The module's state: every fab output, every cookie seen."""

    def __init__(self, lab: Lab, inventory: Path):
        self.lab, self.inventory = lab, inventory
        self.outputs: list[str] = []
        self.cookies: set[str] = set()

    def fab(self, *args, inventory: Path | None = None, check: bool = True, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        proc = fab(*args, "--inventory", str(inventory or self.inventory), lab=LAB, check=False, env=env,
                   timeout=timeout)
        self.outputs.append(f"$ fab {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
        if check:
            assert proc.returncode == 0, f"fab {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def cookie(self) -> str:
        value = self.lab.cookie_file.read_text().strip()
        self.cookies.add(value)
        return value


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with own_lab(LAB, len(HOSTS)) as lab:
        tmp = tmp_path_factory.mktemp("sec")
        data = yaml.safe_load(lab.inventory.read_text())
        data["nodes"] = [n for n in data["nodes"] if n["host"] in CLUSTER]
        inventory = tmp / "cluster.yml"
        inventory.write_text(yaml.safe_dump(data))
        ps = PsCapture(lab, HOSTS, tmp)
        state = Run(lab, inventory)
        state.ps = ps
        state.tmp = tmp
        try:
            yield state
        finally:
            ps.stop()


def domain() -> str:
    return f"{LAB}.test"


def failing_add_master(run: Run, host: str) -> subprocess.CompletedProcess:
    """`fab add-master --host HOST` (full inventory) whose node is killed mid-join."""
    proc = fab_paused_in_join(run.lab, host, "add-master", "--host", host, "--inventory", str(run.lab.inventory))
    ssh(run.lab, host, f"pkill -9 -u ejabberd -f beam; rm -f {JOIN_PAUSE}")
    out, _ = proc.communicate(timeout=300)
    run.outputs.append(f"$ fab add-master --host {host}\n{out}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def leaks_in_outputs(run: Run) -> list[str]:
    return [out.splitlines()[0] for out in run.outputs for c in run.cookies if c in out]


def cookie_files(run: Run) -> set[Path]:
    return {run.lab.cookie_file} | {run.lab.dir / "hosts" / h / "upper" / HOST_COOKIE.lstrip("/") for h in HOSTS}


def leaks_in_local_files(run: Run, allowed: set[Path] | None = None) -> list[str]:
    """The repo tree and the lab's directory, which holds the hosts' disks (overlay upper
    layers): only the cookie files may hold a cookie."""
    allowed = cookie_files(run) if allowed is None else allowed
    needles = [c.encode() for c in run.cookies]
    found = []
    for root in (REPO, run.lab.dir):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".venv", ".git", "merged", "work")]
            for name in filenames:
                path = Path(dirpath) / name
                if path in allowed or not path.is_file() or path.is_symlink():
                    continue
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                if any(n in data for n in needles):
                    found.append(str(path))
    return found


def leaks_on_hosts(run: Run) -> dict[str, list[str]]:
    """grep on each host, the cookies fed on stdin (never on a command line)."""
    found = {}
    for h in HOSTS:
        proc = subprocess.run(["ssh", "-F", str(run.lab.ssh_config), h,
                               f"grep -rlsF -f - {' '.join(HOST_DIRS)} 2>/dev/null || true"],
                              input="\n".join(sorted(run.cookies)) + "\n", capture_output=True, text=True,
                              timeout=120)
        hits = [p for p in proc.stdout.split() if p != HOST_COOKIE]
        if hits:
            found[h] = hits
    return found


def host_cookie_matches(run: Run, host: str, cookie: str) -> bool:
    """Compare the host's cookie file with `cookie` by hash (the cookie stays local)."""
    got = ssh(run.lab, host, f"sha256sum < {HOST_COOKIE}").stdout.split()[0]
    return got == hashlib.sha256(cookie.encode()).hexdigest()


def probe(run: Run, cookie: str, target: str = "ejabberd@lab1", host: str = "lab3") -> str:
    """net_adm:ping from a node on a host outside the cluster; its cookie comes from a file
    (its $HOME/.erlang.cookie), so no cookie is on a command line."""
    home = f"/tmp/probe-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ssh", "-F", str(run.lab.ssh_config), host,
                    f"install -d -m 700 {home} && cat > {home}/.erlang.cookie && chmod 400 {home}/.erlang.cookie"],
                   input=cookie, text=True, check=True, timeout=60)
    out = ssh(run.lab, host, f"cd {home} && HOME={home} timeout 30 erl -sname probe{uuid.uuid4().hex[:6]} "
                             f"-noshell -eval 'io:format(\"~p~n\", [net_adm:ping({target})]), halt().'; "
                             f"rm -rf {home}", check=False).stdout.strip()
    return out.splitlines()[-1] if out else ""


# --------------------------------------------------------------------------- the tests
# Assertions on cookies compare into a bool first: pytest would print the values otherwise.

def test_deploy_plan_status_and_a_failed_join_leak_no_cookie(run):
    plan = run.fab("plan")
    assert "(content redacted)" in plan.stdout
    assert not run.lab.cookie_file.exists(), "plan created the cookie file"
    run.fab("deploy", timeout=900)
    cookie = run.cookie()
    run.fab("plan")
    run.fab("deploy")                 # no changes
    status = run.fab("status")
    assert "cluster: healthy" in status.stdout
    failed = failing_add_master(run, "lab3")
    assert failed.returncode == 1 and "rolled back" in failed.stdout + failed.stderr, failed
    run.fab("status")

    # the cookie: made by the secrets module, long, 0600 here and 0400 ejabberd there
    well_formed = len(cookie) >= 32 and cookie.isalnum()
    assert well_formed, "the cookie is short or has other characters"   # (never printed)
    assert stat.S_IMODE(run.lab.cookie_file.stat().st_mode) == 0o600
    for h in HOSTS:
        assert ssh(run.lab, h, f"stat -c '%a %U %G' {HOST_COOKIE}").stdout.split() == ["400", "ejabberd", "ejabberd"]
        assert host_cookie_matches(run, h, cookie)
    # the searches find the cookie where it is (so they would find it elsewhere)
    assert set(map(Path, leaks_in_local_files(run, allowed=set()))) == cookie_files(run)
    grep = subprocess.run(["ssh", "-F", str(run.lab.ssh_config), "lab1", f"grep -lF -f - {HOST_COOKIE}"],
                          input=cookie + "\n", capture_output=True, text=True)
    assert grep.stdout.strip() == HOST_COOKIE

    # the distribution listens on the cluster address only, inside the port window
    for h in CLUSTER:
        listening = [line.split()[3] for line in ssh(run.lab, h, "ss -Hltnp").stdout.splitlines()
                     if '"beam.smp"' in line]
        dist = [a for a in listening if 4370 <= int(a.rsplit(":", 1)[1]) <= 4379]
        assert len(dist) == 1 and dist[0].rsplit(":", 1)[0] == run.lab.ip(h), listening
        others = {int(a.rsplit(":", 1)[1]) for a in listening} - {int(d.rsplit(":", 1)[1]) for d in dist}
        assert others <= {5222, 5269, 5280}, listening

    assert not leaks_in_outputs(run), leaks_in_outputs(run)
    assert not leaks_in_local_files(run)
    assert not leaks_on_hosts(run)
    captured = run.ps.text()
    # the capture saw the toolkit's remote commands and the joining node's VM (it would see a
    # cookie on one)
    assert "easy_cluster_status" in captured and "easy_cluster_join_seed" in captured, captured[-2000:]
    assert not [c for c in run.cookies if c in captured]


async def _chat(a: tuple[str, str, str], b: tuple[str, str, str], during) -> dict:
    """Clients logged in on lab1 and lab2 exchange messages every 0.2 s while `during` runs
    (in a thread), and after it; returns what was sent, received and whether they disconnected."""
    ca, cb = xmpp.Client(a[1], a[2]), xmpp.Client(b[1], b[2])
    dropped = []
    for c in (ca, cb):
        c.add_event_handler("disconnected", lambda _e, c=c: dropped.append(str(c.boundjid)))
    await xmpp.connect(ca, a[0], 5222)
    await xmpp.connect(cb, b[0], 5222)
    sent: list[str] = []
    stop = asyncio.Event()

    async def chatter():
        i = 0
        while not stop.is_set():
            for tx, rx in ((ca, b[1]), (cb, a[1])):
                body = f"m{i}-{tx.boundjid.user}"
                tx.send_message(mto=rx, mbody=body, mtype="chat")
                sent.append(body)
            i += 1
            await asyncio.sleep(0.2)

    task = asyncio.create_task(chatter())
    result = await asyncio.to_thread(during)
    await asyncio.sleep(2)
    stop.set()
    await task
    await asyncio.sleep(2)   # the last messages arrive
    got = []
    for c in (ca, cb):
        while not c.inbox.empty():
            got.append(c.inbox.get_nowait()[1])
    for c in (ca, cb):
        c.disconnect()
    return {"result": result, "sent": sent, "received": got, "dropped": dropped}


def test_rotate_cookie_under_live_clients_and_the_old_cookie_is_shut_out(run):
    old = run.cookie()
    # with lab3 in the inventory but not in the cluster, rotation refuses and changes nothing
    refused = run.fab("rotate-cookie", inventory=run.lab.inventory, check=False)
    assert refused.returncode == 1 and "needs every node running and in the cluster" in refused.stderr
    unchanged = run.cookie() == old
    assert unchanged and not Path(f"{run.lab.cookie_file}.new").exists()

    users = [(run.lab.ip(h), f"rot{h}-{uuid.uuid4().hex[:6]}@{domain()}", "pw-rot") for h in CLUSTER]
    for address, jid, pw in users:
        xmpp.register(address, jid, pw)
    timing = {}

    def rotate():
        t0 = time.monotonic()
        proc = run.fab("rotate-cookie")
        timing["seconds"] = time.monotonic() - t0
        return proc

    chat = asyncio.run(_chat(users[0], users[1], rotate))
    out = chat["result"].stdout
    assert "cookie rotated on 2 node(s)" in out, out
    new = run.cookie()
    changed = new != old and len(new) >= 32
    assert changed, "the secrets file does not hold a new cookie"
    assert stat.S_IMODE(run.lab.cookie_file.stat().st_mode) == 0o600
    assert not Path(f"{run.lab.cookie_file}.new").exists()
    assert not chat["dropped"], f"clients were disconnected: {chat['dropped']}"
    assert len(chat["sent"]) >= 10 and sorted(chat["received"]) == sorted(chat["sent"]), \
        f"lost: {set(chat['sent']) - set(chat['received'])}"
    print(f"rotate-cookie took {timing['seconds']:.1f}s")

    status = run.fab("status", "--json")
    assert json.loads(status.stdout)["healthy"]
    for h in CLUSTER:
        assert host_cookie_matches(run, h, new)
        assert ssh(run.lab, h, f"stat -c '%a %U' {HOST_COOKIE}; ls -A /var/lib/ejabberd | grep -c rotate || true"
                   ).stdout.split() == ["400", "ejabberd", "0"]
    # from outside the cluster: the old cookie is refused, the new one accepted
    assert probe(run, old) == "pang"
    assert probe(run, new) == "pong"


def test_a_rotation_that_fails_leaves_no_staged_copy_and_a_rerun_finishes_it(run):
    before = run.cookie()
    staging = HOST_COOKIE + ".rotate"
    ssh(run.lab, "lab2", f"mkdir {staging}")        # the upload to lab2 fails
    failed = run.fab("rotate-cookie", check=False)
    assert failed.returncode == 1 and "[lab2] stage the new cookie (SFTP) failed" in failed.stderr, failed
    assert ssh(run.lab, "lab1", f"test -e {staging}", check=False).returncode == 1, "staged copy left on lab1"
    for h in CLUSTER:
        assert host_cookie_matches(run, h, before)
    assert json.loads(run.fab("status", "--json").stdout)["healthy"]
    pending = Path(f"{run.lab.cookie_file}.new")
    run.cookies.add(pending.read_text().strip())
    ssh(run.lab, "lab2", f"rmdir {staging}")
    again = run.fab("rotate-cookie")
    assert "resuming the rotation started earlier" in again.stdout and not pending.exists()


def test_an_interrupted_rotation_is_finished_by_running_it_again(run):
    before = run.cookie()
    proc = subprocess.Popen([str(FAB), "rotate-cookie", "--inventory", str(run.inventory)], cwd=REPO,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "EASYCLUSTER_LAB": LAB})
    lines = []
    for line in proc.stdout:      # killed once every node uses the new cookie towards its peers
        lines.append(line)
        if sum("use it towards every peer: ok" in ln for ln in lines) == len(CLUSTER):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    run.outputs.append("".join(lines) + proc.stdout.read())
    pending = Path(f"{run.lab.cookie_file}.new")
    assert pending.exists() and stat.S_IMODE(pending.stat().st_mode) == 0o600
    new = pending.read_text().strip()
    run.cookies.add(new)
    unchanged = run.cookie() == before
    assert unchanged, "the secrets file changed before the cluster was done"

    locked = run.fab("rotate-cookie", check=False)
    assert locked.returncode == 1 and "the lock is stale" in locked.stderr, locked.stderr
    run.fab("break-lock")
    again = run.fab("rotate-cookie")
    assert "resuming the rotation started earlier" in again.stdout, again.stdout
    finished = run.cookie() == new
    assert finished and not pending.exists()
    assert json.loads(run.fab("status", "--json").stdout)["healthy"]
    for h in CLUSTER:
        assert host_cookie_matches(run, h, new)
    assert probe(run, before) == "pang"


def test_rotation_with_the_cookie_in_an_environment_variable(run):
    current = run.cookie()
    data = yaml.safe_load(run.inventory.read_text())
    data["cluster"]["cookie"] = {"env": "SEC_TEST_COOKIE"}
    inventory = run.tmp / "env.yml"
    inventory.write_text(yaml.safe_dump(data))
    env = {"SEC_TEST_COOKIE": current}
    refused = run.fab("rotate-cookie", inventory=inventory, env=env, check=False)
    assert refused.returncode == 1 and "--new-cookie-file" in refused.stderr
    from easycluster.secrets import generate_cookie
    new = generate_cookie().reveal()
    run.cookies.add(new)
    new_file = run.tmp / "new.cookie"
    fd = os.open(new_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(new + "\n")
    out = run.fab("rotate-cookie", "--new-cookie-file", str(new_file), inventory=inventory, env=env).stdout
    assert "now set $SEC_TEST_COOKIE to the new cookie" in out, out
    # rerun with the variable still old: every host is done, nothing to do but the reminder
    again = run.fab("rotate-cookie", "--new-cookie-file", str(new_file), inventory=inventory, env=env).stdout
    assert "every node already uses the new cookie" in again
    # the variable updated: status and deploy work with it, and the old cookie is shut out
    env = {"SEC_TEST_COOKIE": new}
    assert json.loads(run.fab("status", "--json", inventory=inventory, env=env).stdout)["healthy"]
    # (the firewall may still let in the node whose join failed above, from the full inventory:
    # this two-node inventory shuts it out, a write and nothing else)
    first = run.fab("deploy", inventory=inventory, env=env).stdout
    writes = [line for line in first.splitlines() if re.match(r"^\[lab\d\] (write /|restart |reload )", line)]
    assert all(line.endswith("write /etc/easycluster/firewall.nft") for line in writes), writes
    assert "no changes" in run.fab("deploy", inventory=inventory, env=env).stdout
    assert probe(run, current) == "pang"
    # the lab's own inventory (the secrets file) back in step for what follows
    run.lab.cookie_file.write_text(new + "\n")


def test_no_cookie_anywhere_after_all_of_it(run):
    run.fab("status")
    assert len(run.cookies) >= 4
    assert not leaks_in_outputs(run), leaks_in_outputs(run)
    assert not leaks_in_local_files(run)
    assert not leaks_on_hosts(run)
    # the capture still runs after the rotation: a command living 0.4 s is in it (the rotation's
    # own calls are erl_call's, ~10 ms each, which a 50 ms capture may fall between; the cookie
    # never is on their command line: erl_call reads it from the ejabberd user's home)
    ssh(run.lab, "lab1", "sleep 0.417")
    time.sleep(0.5)
    captured = run.ps.text()
    assert "sleep 0.417" in captured, "the ps capture stopped"
    assert not [c for c in run.cookies if c in captured]
