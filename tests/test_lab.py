"""The lab: real SSH hosts, booting systemd as PID 1, with their own names, processes,
cgroups, disks and links."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import fab, ssh
from easycluster_lab import Lab, cgroup_roots
from easycluster_lab.lab import moves_to

HOSTS = ["lab1", "lab2", "lab3"]


def tcp_open(lab: Lab, src: str, dst: str, port: int = 22) -> bool:
    """Can host `src` open a TCP connection to `dst:port` (checked on src itself)?"""
    proc = ssh(lab, src, f"timeout 2 bash -c '</dev/tcp/{dst}/{port}'", check=False)
    return proc.returncode == 0


def test_each_host_answers_ssh_by_name_with_its_own_hostname(lab):
    for host in HOSTS:
        assert ssh(lab, host, "hostname").stdout.strip() == host


def test_each_host_boots_systemd_as_pid_1_with_sshd_as_its_service(lab):
    for host in HOSTS:
        pid = lab.init_pid(host)
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "systemd"
        nspid = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("NSpid:")]
        assert nspid[0].split()[-1] == "1", f"{host}: {nspid}"
        state = ssh(lab, host, "systemctl is-system-running", check=False).stdout.strip()
        assert state in ("running", "degraded"), f"{host}: systemd is {state!r}"
        assert ssh(lab, host, "systemctl is-active ssh.service").stdout.strip() == "active"
        assert ssh(lab, host, "systemctl is-enabled ssh.service").stdout.strip() == "enabled"
        # sshd listens on the host's own address and loopback only
        listening = ssh(lab, host, "ss -Hltn 'sport = :22'").stdout.split()
        assert sorted(a for a in listening if a.endswith(":22")) == sorted([f"{lab.ip(host)}:22", "127.0.0.1:22"])
        # the host's systemd runs in the host's own cgroup subtree, on the machine's side too
        for cg in lab.cgroups(host):
            assert str(pid) in (cg / "payload/init.scope/cgroup.procs").read_text().split()
        # the lab waited for sshd without connecting to it: OpenSSH 10 (Debian 13) penalises a
        # source whose connections never authenticate, and refused the machine for minutes
        probes = ssh(lab, host, f"journalctl -u ssh -b -o cat | grep -c 'Connection closed by {lab.bridge_ip} port'",
                     check=False).stdout.strip()
        assert probes == "0", f"{host}: {probes} unauthenticated connections from the machine"
    # each host has its own machine-id
    ids = {ssh(lab, h, "cat /etc/machine-id").stdout.strip() for h in HOSTS}
    assert len(ids) == len(HOSTS) and "" not in ids


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
            assert pid1 == ["systemd"], f"{host}: PID 1 is {pid1}"
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


def test_poweroff_kills_every_process_and_boot_starts_what_is_enabled(lab):
    ssh(lab, "lab2", "echo survives > /root/disk-kept")
    ssh(lab, "lab2", "setsid sleep 3000 </dev/null >/dev/null 2>&1 &")
    # a service of its own, enabled and started by the host's systemd (in its own cgroup)
    ssh(lab, "lab2", "printf '[Service]\\nExecStart=/bin/sleep 3001\\n[Install]\\nWantedBy=multi-user.target\\n'"
                     " > /etc/systemd/system/labtest.service && systemctl enable --now labtest.service")
    assert ssh(lab, "lab2", "systemctl is-active labtest.service").stdout.strip() == "active"
    service_pid = ssh(lab, "lab2", "systemctl show -p MainPID --value labtest.service").stdout.strip()
    assert "/payload/system.slice/labtest.service" in Path(
        f"/proc/{_machine_pid(lab, 'lab2', service_pid)}/cgroup").read_text()
    pid = lab.init_pid("lab2")
    ns = os.readlink(f"/proc/{pid}/ns/pid")

    fab("lab.poweroff", "--host", "lab2")
    assert not Path(f"/proc/{pid}").exists()
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _pid_ns(p) == ns]
    assert leftovers == [], f"processes of the powered-off host remain: {leftovers}"
    for cg in lab.cgroups("lab2"):
        assert not cg.exists(), f"{cg} is left behind"
    assert not Path(f"/run/systemd/nspawn/propagate/{lab.machine('lab2')}").exists()
    assert ssh(lab, "lab2", "true", check=False, timeout=20).returncode != 0
    status_line = [line for line in fab("lab.status").stdout.splitlines() if line.startswith("lab2 ")]
    assert len(status_line) == 1 and " off " in status_line[0], status_line

    fab("lab.boot", "--host", "lab2")
    assert ssh(lab, "lab2", "cat /root/disk-kept").stdout.strip() == "survives"
    sleeps = ssh(lab, "lab2", "pgrep -ax sleep", check=False).stdout
    assert "sleep 3000" not in sleeps and "sleep 3001" in sleeps, sleeps
    assert ssh(lab, "lab2", "systemctl is-active labtest.service ssh.service").stdout.split() == ["active"] * 2
    ssh(lab, "lab2", "systemctl disable --now labtest.service; rm /etc/systemd/system/labtest.service /root/disk-kept")


def test_a_reboot_asked_inside_a_host_boots_it_again_on_its_own_disk(lab):
    """`systemctl reboot` on a host (an OS move's) ends its nspawn with 133: the lab boots it
    again, as firmware would. Its disk, and its apt sources as the host left them, are kept."""
    ssh(lab, "lab3", "echo kept > /root/reboot-kept; cp /etc/apt/sources.list.d/debian.sources /root/sources-before;"
                     " echo '# the host its own' >> /etc/apt/sources.list.d/debian.sources")
    before = lab.init_pid("lab3")
    ssh(lab, "lab3", "systemd-run --quiet --on-active=1 systemctl reboot")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = lab.init_pid("lab3")
        if pid and pid != before and ssh(lab, "lab3", "systemctl is-system-running", check=False,
                                         timeout=10).stdout.strip() in ("running", "degraded"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("lab3 did not come back from its reboot")
    assert not Path(f"/proc/{before}").exists()
    assert ssh(lab, "lab3", "cat /root/reboot-kept").stdout.strip() == "kept"
    assert "# the host its own" in ssh(lab, "lab3", "cat /etc/apt/sources.list.d/debian.sources").stdout
    assert "reboot" in (lab.host_dir("lab3") / "console.log").read_text(errors="replace").split("--- ")[-1]
    ssh(lab, "lab3", "mv /root/sources-before /etc/apt/sources.list.d/debian.sources; rm /root/reboot-kept")


@pytest.mark.parametrize("releases, served", [
    ({"bookworm"}, ["bookworm", "trixie"]),       # a Debian 12 host may move to 13: both served
    ({"trixie"}, ["trixie"]),
    ({"bookworm", "trixie"}, ["bookworm", "trixie"]),
])
def test_a_lab_serves_its_hosts_releases_and_each_newer_one(releases, served):
    assert moves_to(releases) == served


def _machine_pid(lab: Lab, host: str, guest_pid: str) -> int:
    """The machine-side PID of the host's process `guest_pid`."""
    ns = os.readlink(f"/proc/{lab.init_pid(host)}/ns/pid")
    for p in filter(str.isdigit, os.listdir("/proc")):
        if _pid_ns(p) == ns:
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{p}/status").read_text()
                if f"NSpid:\t{p}\t{guest_pid}\n" in status:
                    return int(p)
    raise AssertionError(f"{host} has no process {guest_pid}")


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

    # a host of the other release joins the lab: both releases in one lab, each host its own
    fab("lab.up", "--nodes", "3", "--release", "bookworm", lab=scratch_lab.name)
    assert {h: scratch_lab.init_pid(h) for h in pids} == pids, "existing hosts were restarted"
    assert ssh(scratch_lab, "lab3", "hostname").stdout.strip() == "lab3"
    assert "lab3" in ssh(scratch_lab, "lab1", "getent hosts lab3").stdout
    inventory = scratch_lab.inventory.read_text()
    assert all(f"host: lab{i}" in inventory for i in (1, 2, 3))
    assert 'ejabberd_version: "24.12-3+deb13u2"' in inventory    # the first host's release's
    probe = ("systemctl --version | head -n1 | cut -d' ' -f2; . /etc/os-release; echo $VERSION_CODENAME; "
             "apt-get -q update >/dev/null && apt-cache policy ejabberd | awk '/Candidate/ {print $2}'; "
             "apt-cache madison ejabberd | awk '{print $3}' | sort | tr '\\n' ' '")
    seen = {h: ssh(scratch_lab, h, probe).stdout.split() for h in ("lab1", "lab3")}
    # Debian 13: systemd 257, ejabberd 24.12 (26.07 in its backports); Debian 12: 252, 23.01 (24.12)
    assert seen["lab1"] == ["257", "trixie", "24.12-3+deb13u2", "24.12-3+deb13u2", "26.07-1~bpo13+1"], seen
    assert seen["lab3"] == ["252", "bookworm", "23.01-1", "23.01-1", "24.12-3~bpo12+1"], seen
    status = fab("lab.status", lab=scratch_lab.name).stdout
    assert any(line.split()[:3] == ["lab3", scratch_lab.ip("lab3"), "bookworm"] for line in status.splitlines()), status
    assert any(line.split()[:3] == ["lab1", scratch_lab.ip("lab1"), "trixie"] for line in status.splitlines()), status


@pytest.mark.parametrize("scratch_lab", ["tstale"], indirect=True)
def test_up_clears_a_stale_lab_of_its_own(scratch_lab):
    fab("lab.up", "--nodes", "2", lab=scratch_lab.name)
    # The lab dies behind its own back (a killed test run, say): processes gone (nspawn
    # and the guest's PID 1 killed), namespaces, links, bridge, cgroups and pid files left.
    for host in ("lab1", "lab2"):
        for pid in (scratch_lab.init_pid(host), int((scratch_lab.host_dir(host) / "nspawn.pid").read_text())):
            os.kill(pid, 9)
    os.kill(int((scratch_lab.dir / "mirror.pid").read_text()), 9)
    time.sleep(0.5)
    assert all(cg.is_dir() for cg in scratch_lab.cgroups("lab1"))
    subprocess.run(["ip", "netns", "add", f"ec-{scratch_lab.name}-lab9"], check=True)

    fab("lab.up", "--nodes", "2", lab=scratch_lab.name)
    for host in ("lab1", "lab2"):
        assert ssh(scratch_lab, host, "hostname").stdout.strip() == host
    assert f"ec-{scratch_lab.name}-lab9" not in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ssh(scratch_lab, "lab1", "apt-get update", check=False).returncode == 0


@pytest.mark.parametrize("scratch_lab", ["tdown"], indirect=True)
def test_down_leaves_no_namespace_bridge_mount_cgroup_or_process(scratch_lab):
    locks = Path("/run/systemd/nspawn/locks")
    locks_before = set(locks.iterdir()) if locks.is_dir() else set()
    fab("lab.up", "--nodes", "2", lab=scratch_lab.name)
    ns_ids = {os.readlink(f"/proc/{scratch_lab.init_pid(h)}/ns/pid") for h in ("lab1", "lab2")}
    fab("lab.poweroff", "--host", "lab2", lab=scratch_lab.name)    # one off, one running
    fab("lab.down", lab=scratch_lab.name)

    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"ec-{scratch_lab.name}-" not in netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert scratch_lab.bridge not in links and f"ecv-{scratch_lab.name}-" not in links
    for root in cgroup_roots():
        assert not (root / "easycluster" / scratch_lab.name).exists(), f"cgroups left in {root}"
    assert not list(Path("/run/systemd/nspawn/propagate").glob(f"ec-{scratch_lab.name}-*"))
    assert (set(locks.iterdir()) if locks.is_dir() else set()) <= locks_before, "nspawn lock files left"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        assert _pid_ns(pid) not in ns_ids, f"process {pid} of the lab survived"
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        assert str(scratch_lab.dir).encode() not in cmdline
        assert scratch_lab.bridge_ip.encode() not in cmdline, "the lab mirror survived"
        assert str(scratch_lab.dir) not in mountinfo, f"a mount of the lab is left (in process {pid}'s view)"
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
    for tool in ("ip", "unshare", "nsenter", "mount", "systemd-nspawn", "apt-ftparchive", "apt-get", "ssh",
                 "ssh-keygen"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if real:
            (bindir / tool).symlink_to(real)
    proc = fab("lab.up", lab="tnroot", check=False, env={"PATH": str(bindir)})
    assert proc.returncode != 0
    assert "missing prerequisites" in proc.stderr and "debootstrap" in proc.stderr
    assert not Lab("tnroot").dir.exists()


@pytest.mark.lab
def test_a_machine_without_the_cgroup_hierarchies_systemd_needs_is_told_what_to_mount():
    # /sys/fs/cgroup hidden under an empty tmpfs, in a mount namespace of the test's own
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs none /sys/fs/cgroup && exec "$@"', "sh", str(_fab_path()), "lab.up"],
        env={**os.environ, "EASYCLUSTER_LAB": "tnocg"}, capture_output=True, text=True,
        cwd=Path(__file__).parent.parent)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cgroup2" in lines[0] and "name=systemd" in lines[0], proc.stderr
    assert not Lab("tnocg").dir.exists()


def _fab_path() -> Path:
    from conftest import FAB
    return FAB
