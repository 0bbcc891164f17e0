"""The lab: real SSH hosts with their own names, processes, disks and links."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import fab, ssh
from easycluster.lab import Lab

HOSTS = ["lab1", "lab2", "lab3"]


def tcp_open(lab: Lab, src: str, dst: str, port: int = 22) -> bool:
    """Can host `src` open a TCP connection to `dst:port` (checked on src itself)?"""
    proc = ssh(lab, src, f"timeout 2 bash -c '</dev/tcp/{dst}/{port}'", check=False)
    return proc.returncode == 0


def test_each_host_answers_ssh_by_name_with_its_own_hostname(lab):
    for host in HOSTS:
        assert ssh(lab, host, "hostname").stdout.strip() == host


def test_each_host_sees_only_its_own_processes(lab):
    marker = f"sleep {4000 + os.getpid() % 1000}"
    ssh(lab, "lab1", f"setsid {marker} </dev/null >/dev/null 2>&1 &")
    try:
        assert ssh(lab, "lab1", f"pgrep -fx '{marker}'", check=False).returncode == 0
        for other in ("lab2", "lab3"):
            assert ssh(lab, other, f"pgrep -fx '{marker}'", check=False).returncode == 1
        for host in HOSTS:
            ps = ssh(lab, host, "ps -eo pid=,comm=").stdout.split("\n")
            pid1 = [line.split()[1] for line in ps if line.split() and line.split()[0] == "1"]
            assert pid1 == ["tini"], f"{host}: PID 1 is {pid1}"
            assert len(ps) < 20, f"{host} sees {len(ps)} processes: not its own PID namespace"
    finally:
        ssh(lab, "lab1", f"pkill -fx '{marker}'", check=False)


def test_a_file_written_on_one_host_is_on_no_other(lab):
    path = f"/root/private-{uuid.uuid4().hex}"
    ssh(lab, "lab1", f"echo mine > {path}")
    assert ssh(lab, "lab1", f"cat {path}").stdout.strip() == "mine"
    for other in ("lab2", "lab3"):
        assert ssh(lab, other, f"test -e {path}", check=False).returncode == 1
    assert not Path(path).exists(), "the host wrote to the machine's own disk"
    ssh(lab, "lab1", f"rm {path}")


def test_hosts_resolve_each_other_and_reach_nothing_outside_the_lab(lab):
    assert tcp_open(lab, "lab1", "lab2") and tcp_open(lab, "lab3", "lab1")
    routes = ssh(lab, "lab2", "ip route").stdout
    assert "default" not in routes, routes


def test_fresh_host_has_no_ejabberd_installs_it_from_the_lab_mirror_and_wipe_resets(lab):
    assert ssh(lab, "lab3", "dpkg -s ejabberd", check=False).returncode != 0
    ssh(lab, "lab3", "echo old-disk > /root/before-wipe")
    ssh(lab, "lab3", "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ejabberd",
        timeout=300)
    assert "Status: install ok installed" in ssh(lab, "lab3", "dpkg -s ejabberd").stdout

    fab("lab.wipe", "--host", "lab3")
    assert ssh(lab, "lab3", "hostname").stdout.strip() == "lab3"   # new host key, still trusted
    assert ssh(lab, "lab3", "dpkg -s ejabberd", check=False).returncode != 0
    assert ssh(lab, "lab3", "test -e /root/before-wipe", check=False).returncode == 1


def test_poweroff_kills_every_process_and_boot_keeps_the_disk(lab):
    ssh(lab, "lab2", "echo survives > /root/disk-kept")
    ssh(lab, "lab2", "setsid sleep 3000 </dev/null >/dev/null 2>&1 &")
    pid = lab.init_pid("lab2")
    ns = os.readlink(f"/proc/{pid}/ns/pid")

    fab("lab.poweroff", "--host", "lab2")
    assert not Path(f"/proc/{pid}").exists()
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _pid_ns(p) == ns]
    assert leftovers == [], f"processes of the powered-off host remain: {leftovers}"
    assert ssh(lab, "lab2", "true", check=False, timeout=20).returncode != 0
    status_line = [line for line in fab("lab.status").stdout.splitlines() if line.startswith("lab2 ")]
    assert len(status_line) == 1 and " off " in status_line[0], status_line

    fab("lab.boot", "--host", "lab2")
    assert ssh(lab, "lab2", "cat /root/disk-kept").stdout.strip() == "survives"
    assert ssh(lab, "lab2", "pgrep -x sleep", check=False).returncode == 1
    ssh(lab, "lab2", "rm /root/disk-kept")


def _pid_ns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def test_partition_cuts_exactly_one_host_and_heal_restores_it(lab):
    fab("lab.partition", "--host", "lab2")
    try:
        assert not tcp_open(lab, "lab1", "lab2")
        assert not tcp_open(lab, "lab3", "lab2")
        assert tcp_open(lab, "lab1", "lab3") and tcp_open(lab, "lab3", "lab1")
        assert "CUT" in fab("lab.status").stdout
        # the host itself still runs, with nobody to talk to
        assert lab.exec("lab2", "hostname").stdout.strip() == "lab2"
    finally:
        fab("lab.heal-link", "--host", "lab2")
    assert tcp_open(lab, "lab1", "lab2") and tcp_open(lab, "lab2", "lab3")


@pytest.mark.parametrize("scratch_lab", ["tgrow"], indirect=True)
def test_up_is_idempotent_and_adds_hosts_when_nodes_grows(scratch_lab):
    fab("lab.up", "--nodes", "2", lab=scratch_lab.name)
    pids = {h: scratch_lab.init_pid(h) for h in ("lab1", "lab2")}
    again = fab("lab.up", "--nodes", "2", lab=scratch_lab.name)
    assert "nothing to do" in again.stdout
    assert {h: scratch_lab.init_pid(h) for h in pids} == pids

    fab("lab.up", "--nodes", "3", lab=scratch_lab.name)
    assert {h: scratch_lab.init_pid(h) for h in pids} == pids, "existing hosts were restarted"
    assert ssh(scratch_lab, "lab3", "hostname").stdout.strip() == "lab3"
    assert "lab3" in ssh(scratch_lab, "lab1", "getent hosts lab3").stdout
    inventory = scratch_lab.inventory.read_text()
    assert all(f"host: lab{i}" in inventory for i in (1, 2, 3))


@pytest.mark.parametrize("scratch_lab", ["tstale"], indirect=True)
def test_up_clears_a_stale_lab_of_its_own(scratch_lab):
    fab("lab.up", "--nodes", "2", lab=scratch_lab.name)
    # The lab dies behind its own back (a killed test run, say): processes gone,
    # namespaces, links, bridge and pid files left as they were.
    for host in ("lab1", "lab2"):
        unshare_pid = int((scratch_lab.host_dir(host) / "unshare.pid").read_text())
        os.kill(unshare_pid, 9)
    os.kill(int((scratch_lab.dir / "mirror.pid").read_text()), 9)
    subprocess.run(["ip", "netns", "add", f"ec-{scratch_lab.name}-lab9"], check=True)

    fab("lab.up", "--nodes", "2", lab=scratch_lab.name)
    for host in ("lab1", "lab2"):
        assert ssh(scratch_lab, host, "hostname").stdout.strip() == host
    assert f"ec-{scratch_lab.name}-lab9" not in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ssh(scratch_lab, "lab1", "apt-get update", check=False).returncode == 0


@pytest.mark.parametrize("scratch_lab", ["tdown"], indirect=True)
def test_down_leaves_no_namespace_bridge_mount_or_process(scratch_lab):
    fab("lab.up", "--nodes", "2", lab=scratch_lab.name)
    ns_ids = {os.readlink(f"/proc/{scratch_lab.init_pid(h)}/ns/pid") for h in ("lab1", "lab2")}
    fab("lab.down", lab=scratch_lab.name)

    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"ec-{scratch_lab.name}-" not in netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert scratch_lab.bridge not in links and f"ecv-{scratch_lab.name}-" not in links
    assert str(scratch_lab.dir) not in Path("/proc/mounts").read_text()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        assert _pid_ns(pid) not in ns_ids, f"process {pid} of the lab survived"
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert str(scratch_lab.dir).encode() not in cmdline
        assert scratch_lab.bridge_ip.encode() not in cmdline, "the lab mirror survived"
    # the disks are kept: the same lab boots again on them
    assert (scratch_lab.host_dir("lab1") / "upper").is_dir()


@pytest.mark.lab
def test_non_root_is_refused_with_one_line_and_nothing_created():
    name = "tnroot"
    proc = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", str(_fab_path()), "lab.up"],
        env={**os.environ, "EASYCLUSTER_LAB": name, "HOME": "/nonexistent"},
        capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: the lab needs root (network namespaces, mounts): run it as root, e.g. `sudo make demo`"]
    assert not (Lab(name).dir).exists()
    assert f"ec-{name}" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.lab
def test_a_missing_prerequisite_is_named_with_the_package_to_install(tmp_path):
    # a PATH where everything the lab needs is present except debootstrap
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ip", "unshare", "nsenter", "pivot_root", "apt-ftparchive", "apt-get", "ssh", "ssh-keygen"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if real:
            (bindir / tool).symlink_to(real)
    proc = fab("lab.up", lab="tnroot", check=False, env={"PATH": str(bindir)})
    assert proc.returncode != 0
    assert "missing prerequisites" in proc.stderr and "debootstrap" in proc.stderr
    assert not Lab("tnroot").dir.exists()


def _fab_path() -> Path:
    from conftest import FAB
    return FAB
