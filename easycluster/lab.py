"""The lab: several real SSH hosts on one machine, for developing and testing.

A lab host is a fresh Debian 12 server in miniature: its own network namespace
with an address on the lab's bridge, its own hostname and PID namespace, its
own copy-on-write disk over a base root filesystem built once with debootstrap,
and its own sshd accepting the lab key as root. The hosts reach nothing but the
lab; a small apt repository of pre-downloaded packages is served to them on the
bridge address, so `apt-get update && apt-get install ejabberd` works as on a
real server.

Everything here needs root. Layout on the machine:
  CACHE (/var/cache/easycluster)   base root filesystem and apt repository,
                                   shared by every lab, built once
  LABS/<name> (/var/lib/easycluster/labs/<name>)
                                   one lab: key, ssh_config, known_hosts,
                                   inventory.yml, hosts/<host>/{upper,work,...}
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import REPO_ROOT
from .errors import LabError

DEFAULT_LAB = "lab"
MAX_HOSTS = 20
CODENAME = "bookworm"
# What a minimal Debian server has, plus tini as PID 1 (the lab's stand-in for init).
BASE_PACKAGES = ("openssh-server", "iproute2", "procps", "netbase", "tini", "iputils-ping")
# What the lab's apt repository serves: everything these need beyond the base.
REPO_PACKAGES = ("ejabberd", "erlang-dev")
MIRROR_NAME = "lab-mirror"
MIRROR_PORT = 3142
REQUIRED_COMMANDS = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "pivot_root": "util-linux",
    "debootstrap": "debootstrap",
    "apt-ftparchive": "apt-utils",
    "apt-get": "apt",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
_HERE = Path(__file__).resolve().parent
STAGE1 = _HERE / "lab_stage1.sh"
LAB_INIT = _HERE / "lab_init.sh"

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("EASYCLUSTER_CACHE", "/var/cache/easycluster"))


def labs_dir() -> Path:
    return Path(os.environ.get("EASYCLUSTER_LABS", "/var/lib/easycluster/labs"))


def _run(argv: list[str], *, input: str | None = None, check: bool = True,
         timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"`{' '.join(argv)}` failed: {msg[-1] if msg else 'exit %d' % proc.returncode}")
    return proc


def check_prerequisites() -> None:
    """Refuse early, with one line saying what to do, before anything is created."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, mounts): run it as root, e.g. `sudo make demo`")
    missing = sorted({pkg for cmd, pkg in REQUIRED_COMMANDS.items() if shutil.which(cmd) is None})
    if missing:
        raise LabError(f"missing prerequisites: install them with `apt-get install -y {' '.join(missing)}`")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise LabError("this kernel has no overlayfs: `modprobe overlay`, or run the lab on a machine with it")
    if not Path("/proc/self/ns/net").exists():
        raise LabError("this kernel has no network namespaces: run the lab on a machine with them")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise changes to one lab (or to the shared cache) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- base image

def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the labs must use no other)."""
    if os.environ.get("EASYCLUSTER_MIRROR"):
        return os.environ["EASYCLUSTER_MIRROR"]
    sources = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for src in sources:
        if not src.is_file():
            continue
        text = src.read_text(errors="replace")
        if src.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if fields.get("Enabled", "yes") == "no" or "deb" not in fields.get("Types", ""):
                    continue
                if CODENAME in fields.get("Suites", "").split() and "main" in fields.get("Components", ""):
                    return fields["URIs"].split()[0]
        elif src.suffix == ".list" or src.name == "sources.list":
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
                if m and m.group(2) == CODENAME and "main" in m.group(3).split():
                    return m.group(1)
    raise LabError(f"no Debian {CODENAME} mirror found in /etc/apt/sources.list*: set EASYCLUSTER_MIRROR")


def base_rootfs(log: Log = _quiet) -> Path:
    """The base root filesystem every host's disk starts from: built once, then reused."""
    cache = cache_dir()
    rootfs = cache / f"rootfs-{CODENAME}"
    recipe = f"{CODENAME} minbase {','.join(BASE_PACKAGES)}\n"
    stamp = cache / f"rootfs-{CODENAME}.recipe"
    with _locked(cache / ".lock"):
        if rootfs.is_dir() and stamp.is_file() and stamp.read_text() == recipe:
            return rootfs
        log(f"building the base root filesystem (debootstrap {CODENAME}, once, ~1 min)")
        tmp = cache / f"rootfs-{CODENAME}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             CODENAME, str(tmp), debian_mirror()],
            capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise LabError(f"debootstrap failed:\n{tail}")
        # Each host gets its own host keys and apt sources; the image has none.
        for key in (tmp / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        for leftover in ["etc/apt/sources.list", "etc/hostname"]:
            (tmp / leftover).unlink(missing_ok=True)
        for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        for lst in (tmp / "var/lib/apt/lists").glob("*_*"):
            lst.unlink()
        tmp.rename(rootfs)
        stamp.write_text(recipe)
        return rootfs


def apt_repository(rootfs: Path, log: Log = _quiet) -> Path:
    """A flat apt repository with ejabberd and everything it needs beyond the base."""
    cache = cache_dir()
    repo = cache / "apt-repo"
    recipe = f"{CODENAME} {' '.join(REPO_PACKAGES)}\n"
    stamp = cache / "apt-repo.recipe"
    with _locked(cache / ".lock"):
        if (repo / "Release").is_file() and stamp.is_file() and stamp.read_text() == recipe:
            return repo
        log(f"downloading {', '.join(REPO_PACKAGES)} and dependencies for the lab's apt repository")
        shutil.rmtree(repo, ignore_errors=True)
        (repo / "partial").mkdir(parents=True)
        # Resolve against the base image's dpkg status, so the repository holds
        # exactly what a fresh host lacks; the machine's own packages do not matter.
        download = ["apt-get", "-q", "-y", "-o", f"Dir::State::status={rootfs}/var/lib/dpkg/status",
                    "-o", f"Dir::Cache::archives={repo}", "-o", "Debug::NoLocking=1",
                    "install", "--download-only", *REPO_PACKAGES]
        if subprocess.run(download, capture_output=True).returncode != 0:
            _run(["apt-get", "-q", "update"], timeout=600)
            _run(download, timeout=600)
        shutil.rmtree(repo / "partial")
        (repo / "lock").unlink(missing_ok=True)
        (repo / "Packages").write_text(_ftparchive(repo, "packages"))
        (repo / "Release").write_text(_ftparchive(repo, "release"))
        stamp.write_text(recipe)
        return repo


def _ftparchive(repo: Path, what: str) -> str:
    proc = subprocess.run(["apt-ftparchive", what, "."], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"apt-ftparchive {what} failed: {proc.stderr.strip()}")
    return proc.stdout


# --------------------------------------------------------------------------- the lab

@dataclass(frozen=True)
class HostState:
    name: str
    ip: str
    running: bool
    pid: int | None
    processes: int
    link_up: bool


class Lab:
    """One named lab. The default lab is the one `make demo` and `fab lab.*` use."""

    def __init__(self, name: str | None = None):
        name = name or os.environ.get("EASYCLUSTER_LAB", DEFAULT_LAB)
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", name):
            raise LabError(f"lab name {name!r}: use 1-6 lowercase letters or digits, starting with a letter")
        self.name = name
        self.dir = labs_dir() / name
        # 10.77.0.0/24 for the default lab, another /24 of 10.77/16 for the others.
        third = 0 if name == DEFAULT_LAB else 1 + zlib.crc32(name.encode()) % 250
        self.network = ipaddress.ip_network(f"10.77.{third}.0/24")
        self.bridge = f"ecbr-{name}"
        self.bridge_ip = str(self.network[1])
        self._mac_prefix = f"02:ec:4d:{third:02x}"

    def mac(self, host: str | None, side: int = 0) -> str:
        """Fixed MAC addresses, as real NICs have: a rebooted host keeps its
        address, so its neighbours' ARP caches stay right (no reconnect stall)."""
        index = self.index(host) if host else 0
        return f"{self._mac_prefix}:{side:02x}:{index:02x}"

    # ---- naming
    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def cookie_file(self) -> Path:
        return self.dir / "cookie"

    def index(self, host: str) -> int:
        m = re.fullmatch(r"lab([0-9]+)", host)
        if not m or not 1 <= int(m.group(1)) <= MAX_HOSTS:
            raise LabError(f"no lab host named {host!r} (lab hosts are lab1..lab{MAX_HOSTS})")
        return int(m.group(1))

    def ip(self, host: str) -> str:
        return str(self.network[10 + self.index(host)])

    def netns(self, host: str) -> str:
        return f"ec-{self.name}-{host}"

    def veth(self, host: str) -> str:
        return f"ecv-{self.name}-{self.index(host)}"

    def host_dir(self, host: str) -> Path:
        return self.dir / "hosts" / host

    def hosts(self) -> list[str]:
        """Hosts this lab has (a disk, running or not), in order."""
        found = [p.name for p in (self.dir / "hosts").glob("lab*") if re.fullmatch(r"lab[0-9]+", p.name)]
        return sorted(found, key=self.index)

    def _known(self, host: str) -> str:
        self.index(host)
        if host not in self.hosts():
            raise LabError(f"lab {self.name!r} has no host {host!r} (it has: {', '.join(self.hosts()) or 'none'})")
        return host

    # ---- processes
    def init_pid(self, host: str) -> int | None:
        """Machine-side PID of the host's PID 1, if that host is really running."""
        try:
            pid = int((self.host_dir(host) / "init.pid").read_text())
            netns = os.stat(f"/run/netns/{self.netns(host)}").st_ino
            if os.stat(f"/proc/{pid}/ns/net").st_ino == netns:
                return pid
        except (OSError, ValueError):
            pass
        return None

    def _processes(self, pid: int) -> int:
        """How many processes live in the PID namespace whose PID 1 is `pid`."""
        try:
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            return 0
        count = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    count += os.readlink(f"/proc/{entry}/ns/pid") == ns
        return count

    # ---- network
    def _bridge_up(self) -> None:
        if _run(["ip", "link", "show", self.bridge], check=False).returncode != 0:
            _run(["ip", "link", "add", self.bridge, "address", self.mac(None), "type", "bridge"])
            _sysctl(f"net/ipv6/conf/{self.bridge}/disable_ipv6", "1")
            _run(["ip", "addr", "add", f"{self.bridge_ip}/{self.network.prefixlen}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    def _host_net_up(self, host: str) -> None:
        ns, veth = self.netns(host), self.veth(host)
        if Path(f"/run/netns/{ns}").exists():
            _run(["ip", "netns", "del", ns])
        _run(["ip", "link", "del", veth], check=False)
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", veth, "address", self.mac(host, 1), "type", "veth",
              "peer", "name", "eth0", "address", self.mac(host), "netns", ns])
        _sysctl(f"net/ipv6/conf/{veth}/disable_ipv6", "1")
        _run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        _run(["ip", "netns", "exec", ns, "sh", "-c",
              "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{self.ip(host)}/{self.network.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        # No default route: a lab host reaches the lab and nothing else.

    def link_up(self, host: str) -> bool:
        proc = _run(["ip", "-o", "link", "show", self.veth(host)], check=False)
        return proc.returncode == 0 and "state DOWN" not in proc.stdout and ",UP" in proc.stdout

    def partition(self, host: str) -> None:
        """Cut the host's network link (it keeps running, nobody reaches it)."""
        self._known(host)
        _run(["ip", "link", "set", self.veth(host), "down"])

    def heal_link(self, host: str) -> None:
        self._known(host)
        _run(["ip", "link", "set", self.veth(host), "up"])

    # ---- mirror
    def _mirror_pid(self) -> int | None:
        try:
            pid = int((self.dir / "mirror.pid").read_text())
            if "http.server" in Path(f"/proc/{pid}/cmdline").read_text():
                return pid
        except (OSError, ValueError):
            pass
        return None

    def _mirror_up(self, repo: Path) -> None:
        if self._mirror_pid():
            return
        log = open(self.dir / "mirror.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(MIRROR_PORT), "--bind", self.bridge_ip,
             "--directory", str(repo)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        (self.dir / "mirror.pid").write_text(str(proc.pid))
        _wait_tcp(self.bridge_ip, MIRROR_PORT, 10, f"lab mirror on {self.bridge_ip}:{MIRROR_PORT}")

    # ---- disks
    def _ensure_key(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"easycluster-{self.name}",
                  "-f", str(self.key)])

    def _write_lab_files(self) -> None:
        """ssh_config, known_hosts and inventory: how the toolkit reaches the hosts."""
        hosts = self.hosts()
        config = [f"# ssh_config of the easycluster lab {self.name!r}, written by `fab lab.up`\n"]
        for h in hosts:
            config.append(f"Host {h}\n  HostName {self.ip(h)}\n")
        config.append(
            f"Host {' '.join(hosts)}\n  User root\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
            f"  BatchMode yes\n  ConnectTimeout 5\n")
        _write(self.ssh_config, "".join(config), 0o644)
        known = []
        for h in hosts:
            pub = (self.host_dir(h) / "upper/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
            known.append(f"{h},{self.ip(h)} {pub[0]} {pub[1]}\n")
        _write(self.known_hosts, "".join(known), 0o644)
        self._write_inventory(hosts)

    def _write_inventory(self, hosts: list[str]) -> None:
        from .labinventory import render_lab_inventory
        text = render_lab_inventory(self, hosts)
        _write(self.inventory, text, 0o644)
        if self.name == DEFAULT_LAB:
            _write(REPO_ROOT / "inventory" / "lab.yml", text, 0o644)

    def _etc_hosts(self) -> str:
        lines = ["127.0.0.1\tlocalhost\n", f"{self.bridge_ip}\t{MIRROR_NAME}\n"]
        lines += [f"{self.ip(h)}\t{h}\n" for h in self.hosts()]
        return "".join(lines)

    def _prepare_disk(self, host: str) -> None:
        """Give the host what a freshly installed server has: name, keys, sources."""
        d = self.host_dir(host)
        upper = d / "upper"
        for sub in ("upper", "work", "merged"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        etc = upper / "etc"
        _write(etc / "hostname", f"{host}\n", 0o644)
        _write(etc / "resolv.conf", "nameserver 127.0.0.1\n", 0o644)  # no DNS leaves the lab
        _write(etc / "apt/sources.list", f"deb [trusted=yes] http://{MIRROR_NAME}:{MIRROR_PORT}/ ./\n", 0o644)
        hostkey = etc / "ssh/ssh_host_ed25519_key"
        if not hostkey.exists():
            hostkey.parent.mkdir(parents=True, exist_ok=True)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host}", "-f", str(hostkey)])
        _write(etc / "ssh/sshd_config.d/lab.conf",
               f"ListenAddress {self.ip(host)}\nListenAddress 127.0.0.1\n"
               "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"
               "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n"
               "MaxStartups 100:30:200\nMaxSessions 100\n", 0o644)
        ssh_dir = upper / "root/.ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(upper / "root", 0o700)
        os.chmod(ssh_dir, 0o700)
        _write(ssh_dir / "authorized_keys", Path(f"{self.key}.pub").read_text(), 0o600)
        # merged /usr: /sbin is a link to usr/sbin in the base, so write below usr/
        _write(upper / "usr/sbin/lab-init", LAB_INIT.read_text(), 0o755)

    def _sync_etc_hosts(self) -> None:
        """Every host's /etc/hosts names every lab host (a lab has no DNS)."""
        text = self._etc_hosts()
        for h in self.hosts():
            pid = self.init_pid(h)
            if pid:
                _run(["nsenter", "-t", str(pid), "-m", "-r", "sh", "-c", "cat > /etc/hosts"], input=text)
            else:
                _write(self.host_dir(h) / "upper/etc/hosts", text, 0o644)

    # ---- host lifecycle
    def _spawn(self, host: str, rootfs: Path) -> None:
        d = self.host_dir(host)
        self._host_net_up(host)
        console = open(d / "console.log", "ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns(host),
             "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child=SIGKILL",
             "sh", str(STAGE1), host, str(rootfs), str(d)],
            stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True)
        (d / "unshare.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(children.read_text().split()[0])
                (d / "init.pid").write_text(str(pid))
                return
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        raise LabError(f"{host} did not boot: see {d / 'console.log'}")

    def _wait_ssh(self, host: str, timeout: float = 20) -> None:
        _wait_tcp(self.ip(host), 22, timeout, f"sshd of {host} (see {self.host_dir(host) / 'console.log'})")

    def up(self, nodes: int = 3, fresh: bool = False, log: Log = _quiet) -> list[str]:
        """Bring hosts lab1..labN up (idempotent); clear what a dead lab left behind."""
        check_prerequisites()
        if not 1 <= nodes <= MAX_HOSTS:
            raise LabError(f"--nodes must be between 1 and {MAX_HOSTS}, not {nodes}")
        rootfs = base_rootfs(log)
        repo = apt_repository(rootfs, log)
        with _locked(labs_dir() / f".{self.name}.lock"):
            if fresh:
                self._down(purge=True, log=log)
            self._clear_stale(log)
            self._ensure_key()
            wanted = [f"lab{i}" for i in range(1, nodes + 1)]
            for h in wanted:
                self._prepare_disk(h)
            self._sync_etc_hosts()
            self._bridge_up()
            self._mirror_up(repo)
            started = []
            for h in self.hosts():
                if h in wanted and not self.init_pid(h):
                    self._spawn(h, rootfs)
                    started.append(h)
            for h in started:
                self._wait_ssh(h)
                log(f"{h}: up at {self.ip(h)}")
            self._write_lab_files()
            if not started:
                log(f"lab {self.name!r}: all {nodes} hosts already up, nothing to do")
            return started

    def _clear_stale(self, log: Log) -> None:
        """A lab that died (machine reboot, killed test run) leaves namespaces,
        links and pid files behind: remove them so the lab can start clean."""
        live = {h for h in self.hosts() if self.init_pid(h)}
        prefix = f"ec-{self.name}-"
        for ns in _netns_list():
            if ns.startswith(prefix) and ns[len(prefix):] not in live:
                _run(["ip", "netns", "del", ns], check=False)
                log(f"cleared stale namespace {ns}")
        for h in self.hosts():
            if h not in live:
                self._reap(h)
                _kill_referring(self.host_dir(h))
                _run(["ip", "link", "del", self.veth(h)], check=False)
        if not self._mirror_pid():
            (self.dir / "mirror.pid").unlink(missing_ok=True)

    def _reap(self, host: str) -> None:
        """Wait for a powered-off host's processes to be gone, then forget them."""
        d = self.host_dir(host)
        for name in ("init.pid", "unshare.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int((d / name).read_text())
                if _is_ours(pid, d):
                    _kill_wait(pid)
            (d / name).unlink(missing_ok=True)

    def poweroff(self, host: str) -> None:
        """SIGKILL the whole host (its PID 1; the kernel kills the rest). Disk kept."""
        with _locked(labs_dir() / f".{self.name}.lock"):
            self._known(host)
            pid = self.init_pid(host)
            if pid:
                _kill_wait(pid)
            self._reap(host)

    def boot(self, host: str, log: Log = _quiet) -> bool:
        check_prerequisites()
        rootfs = base_rootfs(log)
        with _locked(labs_dir() / f".{self.name}.lock"):
            self._known(host)
            if self.init_pid(host):
                log(f"{host}: already running")
                return False
            self._reap(host)
            self._prepare_disk(host)
            self._bridge_up()
            self._mirror_up(apt_repository(rootfs))
            self._spawn(host, rootfs)
            self._wait_ssh(host)
            log(f"{host}: up at {self.ip(host)}")
            return True

    def wipe(self, host: str, log: Log = _quiet) -> None:
        """Power the host off and give it a fresh disk (and new host keys), then boot it."""
        self.poweroff(host)
        with _locked(labs_dir() / f".{self.name}.lock"):
            shutil.rmtree(self.host_dir(host))
            self._prepare_disk(host)
            self._write_lab_files()
            self._sync_etc_hosts()
        self.boot(host, log)

    def down(self, purge: bool = False, log: Log = _quiet) -> None:
        with _locked(labs_dir() / f".{self.name}.lock"):
            self._down(purge, log)

    def _down(self, purge: bool, log: Log) -> None:
        for h in self.hosts():
            pid = self.init_pid(h)
            if pid:
                _kill_wait(pid)
            self._reap(h)
        mirror = self._mirror_pid()
        if mirror:
            _kill_wait(mirror)
        _kill_referring(self.dir)
        (self.dir / "mirror.pid").unlink(missing_ok=True)
        prefix = f"ec-{self.name}-"
        for ns in _netns_list():
            if ns.startswith(prefix):
                _run(["ip", "netns", "del", ns], check=False)
        for link in _links():
            if link.startswith(f"ecv-{self.name}-"):
                _run(["ip", "link", "del", link], check=False)
        _run(["ip", "link", "del", self.bridge], check=False)
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.name == DEFAULT_LAB:
                (REPO_ROOT / "inventory" / "lab.yml").unlink(missing_ok=True)
        log(f"lab {self.name!r} down" + (" and its disks removed" if purge else " (disks kept)"))

    def status(self) -> list[HostState]:
        states = []
        for h in self.hosts():
            pid = self.init_pid(h)
            states.append(HostState(h, self.ip(h), pid is not None, pid,
                                    self._processes(pid) if pid else 0, self.link_up(h)))
        return states

    def exec(self, host: str, command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a shell command inside a host without SSH (for the lab's own checks)."""
        pid = self.init_pid(self._known(host))
        if not pid:
            raise LabError(f"{host} is not running")
        return _run(["nsenter", "-t", str(pid), "-m", "-u", "-n", "-p", "-r", "-w", "sh", "-c", command],
                    check=check, timeout=timeout)


# --------------------------------------------------------------------------- helpers

def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _sysctl(key: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", key).write_text(value)


def _netns_list() -> list[str]:
    proc = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _links() -> list[str]:
    proc = _run(["ip", "-o", "link", "show"], check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in proc.stdout.splitlines()]


def _is_ours(pid: int, host_dir: Path) -> bool:
    """Is `pid` a process of this lab host (not an unrelated reuse of the number)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(host_dir) in cmdline or "tini" in cmdline


def _kill_referring(path: Path) -> None:
    """Kill what a lost pid file no longer names: processes started for `path`."""
    needle = str(path).encode() + b"/"
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                    _kill_wait(int(entry))


def _kill_wait(pid: int, timeout: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # reap if it is our child, else just poll for its disappearance
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.split(") ", 1)[1].startswith("Z"):
                return
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.02)
    raise LabError(f"process {pid} did not die within {timeout:.0f}s")


def _wait_tcp(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise LabError(f"{what} did not come up within {timeout:.0f}s") from None
            time.sleep(0.05)
