"""The lab: several real SSH hosts on one machine, for developing and testing.

A lab host is a fresh Debian server in miniature, of either release the toolkit supports
(RELEASES: Debian 13 "trixie", the default, or Debian 12 "bookworm"; one lab may hold both):
its release's systemd (257 or 252) boots as its PID 1 (`systemd-nspawn --boot`), as on a real
server, so the toolkit's systemctl
paths run for real. It has its own network namespace with an address on the
lab's bridge, its own hostname and PID namespace, its own cgroup subtree
(managed by its own systemd), its own copy-on-write disk over a base root
filesystem built once with debootstrap, and its own sshd (ssh.service) accepting
the lab key as root. The hosts reach nothing but the lab; a small apt repository
of pre-downloaded packages (each release's suite and its backports) is served to them on the
bridge address, so `apt-get update && apt-get install ejabberd` works as on a real server.

Everything here needs root. Layout on the machine:
  CACHE (/var/cache/easycluster)   a base root filesystem and an apt repository per
                                   release, shared by every lab, each built once;
                                   apt-mirror/: what the labs' mirrors serve (every
                                   suite built, as a link)
  LABS/<name> (/var/lib/easycluster/labs/<name>)
                                   one lab: key, ssh_config, known_hosts,
                                   inventory.yml, hosts/<host>/{release,upper,work,...}
  <cgroup>/easycluster/<name>/<host>
                                   the cgroup each host is launched from, in
                                   the name=systemd and cgroup2 hierarchies
                                   (or cgroup2 alone on a unified machine)

A host is launched as: its netns + veth (made beforehand), a private mount
namespace holding its overlay, then `systemd-nspawn --boot` of that overlay,
started from the host's own cgroup (nspawn's --keep-unit makes payload/ and
supervisor/ below it). Killing the guest's PID 1 powers the host off; nothing
of it is left on the machine but its disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from easycluster.errors import EasyClusterError
from easycluster.scripts import render as render_script


class LabError(EasyClusterError):
    """The lab cannot do what was asked (prerequisite missing, host unknown...)."""


DEFAULT_LAB = "lab"
MAX_HOSTS = 20
# The Debian releases a lab host can run: codename -> version. Debian 13 is the stable release
# (the default); Debian 12 (oldstable) for clusters still on it, and for moving them.
RELEASES = {"trixie": "13", "bookworm": "12"}
DEFAULT_RELEASE = "trixie"
# What a minimal Debian server has, with systemd as its init (as real servers run).
BASE_PACKAGES = ("openssh-server", "iproute2", "procps", "netbase", "iputils-ping",
                 "systemd", "systemd-sysv", "dbus", "libpam-systemd")
IMAGE_VERSION = 1      # bump when what base_rootfs() does to the image changes
# What the lab's apt repository serves: everything these need beyond the base. PostgreSQL
# (Debian's, for a database host) and ejabberd's PostgreSQL driver (a Suggests of ejabberd); for a
# replicated database Patroni (with python3-etcd, which a plain install of patroni does not bring
# on trixie: python3-consul meets its dependency), etcd and HAProxy; for cluster.monitoring,
# Prometheus, Alertmanager and node-exporter.
REPO_PACKAGES = ("ejabberd", "erlang-dev", "nftables", "postgresql", "erlang-p1-pgsql",
                 "patroni", "python3-etcd", "etcd-server", "etcd-client", "haproxy",
                 "prometheus", "prometheus-alertmanager", "prometheus-node-exporter")
REPO_LAYOUT = 3        # bump when how apt_repository() lays the repository out changes
MIRROR_NAME = "lab-mirror"
IMPAIR_TABLE = "lab_impaired_link"   # impair_link's nftables table, in the host's namespace
MIRROR_PORT = 3142
REQUIRED_COMMANDS = {
    "ip": "iproute2",
    "tc": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "apt-ftparchive": "apt-utils",
    "apt-get": "apt",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
CGROUP_FS = Path("/sys/fs/cgroup")
BOOT_TIMEOUT = 90      # seconds from launch to sshd up and systemd running/degraded
HALT_TIMEOUT = 20      # seconds a clean shutdown may take before the power is cut
# CAP_NET_ADMIN: a host manages its own firewall (nftables), as a real server's root does; it
# acts on the host's own network namespace only.
NSPAWN = ["systemd-nspawn", "--boot", "--quiet", "--register=no", "--keep-unit", "--capability=CAP_NET_ADMIN",
          "--console=read-only", "--link-journal=no", "--resolv-conf=off", "--timezone=off"]

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def default_release() -> str:
    """The release of a new lab host: $EASYCLUSTER_LAB_RELEASE, else Debian's stable release."""
    return check_release(os.environ.get("EASYCLUSTER_LAB_RELEASE") or DEFAULT_RELEASE)


def check_release(release: str) -> str:
    if release not in RELEASES:
        raise LabError(f"no Debian release {release!r} for lab hosts: use one of "
                       f"{', '.join(f'{c} ({v})' for c, v in RELEASES.items())}")
    return release


def suites(release: str) -> tuple[str, str]:
    """The suites the lab's apt repository serves for a release, each a flat repository of its
    own: Debian's release, and its backports (the next ejabberd), as a server with backports
    enabled has them."""
    return release, f"{release}-backports"


def moves_to(releases: set[str]) -> list[str]:
    """The releases whose suites a lab of hosts of `releases` serves: theirs, and each newer
    one (a host's OS upgrade goes there), oldest first."""
    oldest = min(int(RELEASES[r]) for r in releases)
    return sorted((r for r, v in RELEASES.items() if int(v) >= oldest), key=lambda r: int(RELEASES[r]))


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
    cgroup_roots()


@functools.lru_cache(maxsize=1)
def cgroup_roots() -> tuple[Path, ...]:
    """The cgroup hierarchies a host's systemd needs, where each host gets a cgroup of
    its own: cgroup2 alone on a unified machine; name=systemd and cgroup2 on a hybrid one."""
    entries = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) >= 3:
            entries.append((left.split()[4], fields[0], fields[2]))

    def mounted(path: Path) -> tuple[str, str]:
        """(fstype, options) of what is visible at `path` if a mount point, else ("", "").
        A later mount on the path or on a parent hides the earlier ones."""
        for point, fstype, options in reversed(entries):
            if point == str(path):
                return fstype, options
            if str(path).startswith(point.rstrip("/") + "/"):
                return "", ""
        return "", ""

    mounts = {str(p): mounted(p) for p in (CGROUP_FS, CGROUP_FS / "systemd", CGROUP_FS / "unified")}
    if mounts.get(str(CGROUP_FS), ("",))[0] == "cgroup2":
        return (CGROUP_FS,)
    named = mounts.get(str(CGROUP_FS / "systemd"), ("", ""))
    unified = mounts.get(str(CGROUP_FS / "unified"), ("",))
    if named[0] == "cgroup" and "name=systemd" in named[1].split(",") and unified[0] == "cgroup2":
        return (CGROUP_FS / "systemd", CGROUP_FS / "unified")
    raise LabError(
        "the lab's systemd hosts need cgroup2 on /sys/fs/cgroup, or (hybrid) a name=systemd "
        "hierarchy on /sys/fs/cgroup/systemd and cgroup2 on /sys/fs/cgroup/unified: e.g. "
        "`mkdir -p /sys/fs/cgroup/systemd /sys/fs/cgroup/unified && mount -t cgroup -o none,name=systemd "
        "cgroup /sys/fs/cgroup/systemd && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified`")


def _cgroup_roots_if_any() -> tuple[Path, ...]:
    """cgroup_roots(), or none on a machine without them (where no host can have run)."""
    try:
        return cgroup_roots()
    except LabError:
        return ()


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
                if set(RELEASES) & set(fields.get("Suites", "").split()) and "main" in fields.get("Components", ""):
                    return fields["URIs"].split()[0]
        elif src.suffix == ".list" or src.name == "sources.list":
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
                if m and m.group(2) in RELEASES and "main" in m.group(3).split():
                    return m.group(1)
    raise LabError(f"no Debian mirror ({' or '.join(RELEASES)}) found in /etc/apt/sources.list*: "
                   "set EASYCLUSTER_MIRROR")


def base_rootfs(release: str, log: Log = _quiet) -> Path:
    """The base root filesystem of a release, every host of that release's disk starts from:
    built once, then reused. A quiet Debian server booting systemd: no timers, no machine-id,
    no host keys."""
    check_release(release)
    cache = cache_dir()
    image = f"rootfs-{release}-systemd"
    rootfs = cache / image
    recipe = f"{release} minbase {','.join(BASE_PACKAGES)} image-{IMAGE_VERSION}\n"
    stamp = cache / f"{image}.recipe"
    with _locked(cache / ".lock"):
        if rootfs.is_dir() and stamp.is_file() and stamp.read_text() == recipe:
            return rootfs
        log(f"building the base root filesystem (debootstrap {release} with systemd, once, ~1 min)")
        tmp = cache / f"{image}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             release, str(tmp), debian_mirror()],
            capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise LabError(f"debootstrap failed:\n{tail}")
        # Each host gets its own host keys, machine-id and apt sources; the image has none.
        for key in (tmp / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        for leftover in ["etc/apt/sources.list", "etc/hostname"]:
            (tmp / leftover).unlink(missing_ok=True)
        for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        for lst in (tmp / "var/lib/apt/lists").glob("*_*"):
            lst.unlink()
        (tmp / "etc/machine-id").write_text("")
        dbus_id = tmp / "var/lib/dbus/machine-id"
        dbus_id.unlink(missing_ok=True)
        dbus_id.parent.mkdir(parents=True, exist_ok=True)
        dbus_id.symlink_to("/etc/machine-id")
        # A quiet server: no timers reaching for the internet or trimming disks.
        etc_units = tmp / "etc/systemd/system"
        for unit in [*(etc_units / "timers.target.wants").glob("*.timer"),
                     etc_units / "multi-user.target.wants/e2scrub_reap.service"]:
            unit.unlink(missing_ok=True)
        # sshd comes up at boot, as on any server reached over SSH (the package enables it;
        # make sure of it).
        wants = etc_units / "multi-user.target.wants/ssh.service"
        if not wants.is_symlink():
            wants.parent.mkdir(parents=True, exist_ok=True)
            wants.symlink_to("/lib/systemd/system/ssh.service")
        # Apt's sources are each host's own (the lab's mirror); Debian 13's debootstrap leaves
        # them in deb822 form too.
        (tmp / "etc/apt/sources.list.d/debian.sources").unlink(missing_ok=True)
        tmp.rename(rootfs)
        stamp.write_text(recipe)
        return rootfs


def apt_repository(rootfs: Path, release: str, log: Log = _quiet) -> Path:
    """The lab's apt repository of a release: two flat repositories, as a real server with
    backports enabled sees Debian. suites(release)[0] (bookworm: ejabberd 23.01; trixie: 24.12)
    has everything its ejabberd, PostgreSQL and the driver need beyond the base;
    suites(release)[1] (the backports: bookworm's 24.12, trixie's 26.07) the same from
    backports, and a Release that says NotAutomatic (apt's priority 100: only installed when
    asked for, by version or `-t <release>-backports`), as Debian's backports archive does.
    Linked into mirror_root(), which every lab's mirror serves."""
    cache = cache_dir()
    repo = cache / f"apt-repo-{rootfs.name.removeprefix('rootfs-')}"
    wanted = suites(release)
    recipe = f"{' '.join(wanted)} {' '.join(REPO_PACKAGES)} beyond {rootfs.name} " \
             f"{(rootfs.parent / f'{rootfs.name}.recipe').read_text().strip()} layout-{REPO_LAYOUT}\n"
    stamp = cache / f"{repo.name}.recipe"
    with _locked(cache / ".lock"):
        if not (all((repo / s / "Release").is_file() for s in wanted) and stamp.is_file()
                and stamp.read_text() == recipe):
            log(f"downloading {', '.join(REPO_PACKAGES)} and dependencies for the lab's apt repository "
                f"({' and '.join(wanted)})")
            shutil.rmtree(repo, ignore_errors=True)
            apt = _private_apt(cache, release, log)
            for suite in wanted:
                d = repo / suite
                (d / "partial").mkdir(parents=True)
                # Resolve against the base image's dpkg status, so the repository holds exactly
                # what a fresh host lacks; the machine's own packages do not matter.
                _run([*apt, "-o", f"Dir::State::status={rootfs}/var/lib/dpkg/status",
                      "-o", f"Dir::Cache::archives={d}", "-t", suite,
                      "install", "--download-only", *REPO_PACKAGES], timeout=900)
                if suite == release:
                    # The base image's own packages too: a host of the release before moves to
                    # this one with `apt full-upgrade`, which needs every package of the release.
                    _run([*apt, "-o", f"Dir::State::status={rootfs}/var/lib/dpkg/status",
                          "-o", f"Dir::Cache::archives={d}", "install", "--download-only", "--reinstall",
                          *_installed(rootfs)], timeout=900)
                shutil.rmtree(d / "partial")
                (d / "lock").unlink(missing_ok=True)
                (d / "Packages").write_text(_ftparchive(d, "packages"))
                backports = suite.endswith("-backports")
                fields = {"Suite": suite, "Codename": suite, "Origin": "Debian", "Label": "lab " + suite}
                if backports:
                    fields.update(NotAutomatic="yes", ButAutomaticUpgrades="yes")
                (d / "Release").write_text(_ftparchive(d, "release", fields))
            stamp.write_text(recipe)
        for suite in wanted:
            link = mirror_root() / suite
            link.parent.mkdir(parents=True, exist_ok=True)
            if not (link.is_symlink() and os.readlink(link) == str(repo / suite)):
                link.unlink(missing_ok=True)
                link.symlink_to(repo / suite)
        return repo


def mirror_root() -> Path:
    """What every lab's mirror serves: each suite built so far, as a link to its repository (a
    host of one release can be pointed at another's suites, as an OS upgrade does)."""
    return cache_dir() / "apt-mirror"


def release_image(release: str, log: Log = _quiet) -> Path:
    """A release's base root filesystem, with its apt repository ready in the mirror."""
    rootfs = base_rootfs(release, log)
    apt_repository(rootfs, release, log)
    return rootfs


def _private_apt(cache: Path, release: str, log: Log) -> list[str]:
    """apt-get with sources and lists of the lab's own (the machine's mirror, the release's
    suites), so the machine's apt configuration is neither needed nor touched; lists refreshed
    here."""
    state = cache / f"apt-state-{release}"
    (state / "lists/partial").mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    _write(state / "sources.list", "".join(f"deb {mirror} {s} main\n" for s in suites(release)), 0o644)
    apt = ["apt-get", "-q", "-y", "-o", f"Dir::Etc::sourcelist={state}/sources.list",
           "-o", "Dir::Etc::sourceparts=/nonexistent", "-o", f"Dir::State::Lists={state}/lists",
           "-o", "Debug::NoLocking=1"]
    log(f"apt-get update ({mirror}: {', '.join(suites(release))})")
    _run([*apt, "update"], timeout=600)
    return apt


def _installed(rootfs: Path) -> list[str]:
    """The packages installed in a root filesystem."""
    proc = _run(["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", "-f", "${db:Status-Abbrev} ${Package}\n"])
    return [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ii ")]


def _ftparchive(repo: Path, what: str, fields: dict[str, str] | None = None) -> str:
    options = [f"-oAPT::FTPArchive::Release::{k}={v}" for k, v in (fields or {}).items()]
    proc = subprocess.run(["apt-ftparchive", *options, what, "."], cwd=repo, capture_output=True, text=True)
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
    release: str = ""


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
        self._launched: dict[str, subprocess.Popen] = {}

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

    def machine(self, host: str) -> str:
        """The host's nspawn machine name (unique on the machine, unlike the hostname)."""
        return f"ec-{self.name}-{host}"

    def veth(self, host: str) -> str:
        return f"ecv-{self.name}-{self.index(host)}"

    def host_dir(self, host: str) -> Path:
        return self.dir / "hosts" / host

    def release(self, host: str) -> str:
        """The Debian release the host's disk was made with (a disk from before releases were
        recorded is bookworm's: the only one there was)."""
        with contextlib.suppress(OSError):
            return (self.host_dir(host) / "release").read_text().strip()
        return "bookworm"

    def os_release(self, host: str) -> str:
        """The codename the host's system says it runs (its /usr/lib/os-release, which an OS
        upgrade replaces on its disk); the disk's release when it never changed."""
        with contextlib.suppress(OSError):
            for line in (self.host_dir(host) / "upper/usr/lib/os-release").read_text().splitlines():
                if line.startswith("VERSION_CODENAME="):
                    return line.split("=", 1)[1].strip().strip('"')
        return self.release(host)

    def hosts(self) -> list[str]:
        """Hosts this lab has (a disk, running or not), in order."""
        found = [p.name for p in (self.dir / "hosts").glob("lab*") if re.fullmatch(r"lab[0-9]+", p.name)]
        return sorted(found, key=self.index)

    def _known(self, host: str) -> str:
        self.index(host)
        if host not in self.hosts():
            raise LabError(f"lab {self.name!r} has no host {host!r} (it has: {', '.join(self.hosts()) or 'none'})")
        return host

    # ---- processes and cgroups
    def cgroups(self, host: str) -> list[Path]:
        """The host's own cgroup in each hierarchy: nspawn is started from it, the
        host's systemd manages payload/ below it, `exec` runs commands in it."""
        return [root / "easycluster" / self.name / host for root in _cgroup_roots_if_any()]

    def _cgroup_pids(self, host: str) -> set[int]:
        """Every process in the host's cgroups (nspawn, the guest's systemd and all below)."""
        pids: set[int] = set()
        for top in self.cgroups(host):
            for dirpath, _dirs, _files in os.walk(top):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
        return pids

    def _nspawn_pid(self, host: str) -> int | None:
        """Machine-side PID of the host's systemd-nspawn, if it runs (the launcher's child: a
        new one after each reboot)."""
        for pid in sorted(self._cgroup_pids(host)):
            if _comm(pid) == "systemd-nspawn" and _state(pid) not in ("Z", "X", None):
                return pid
        return None

    def _launcher_alive(self, host: str) -> bool:
        """Is the host's launcher (sh, then unshare, then nspawn: one PID) still alive?"""
        proc = self._launched.get(host)
        if proc is not None:                  # launched by this process: ask the kernel
            return proc.poll() is None
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.host_dir(host) / "nspawn.pid").read_text())
            return (_state(pid) not in ("Z", "X", None)
                    and str(self.host_dir(host)).encode() in Path(f"/proc/{pid}/cmdline").read_bytes())
        return False

    def init_pid(self, host: str) -> int | None:
        """Machine-side PID of the host's systemd (PID 1 in its namespace), if it runs."""
        candidates: list[int] = []
        for top in self.cgroups(host):       # where the guest's systemd puts itself
            with contextlib.suppress(OSError, ValueError):
                candidates += [int(p) for p in (top / "payload/init.scope/cgroup.procs").read_text().split()]
        nspawn = self._nspawn_pid(host)
        if nspawn:                           # before it has: nspawn's child
            with contextlib.suppress(OSError, ValueError):
                candidates += [int(p) for p in Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()]
        for pid in candidates:
            if _nspid(pid) == 1 and _state(pid) not in ("Z", "X", None):
                return pid
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

    def impair_link(self, host: str, loss: int = 5, rate_kbit: int = 2000, queue_ms: int = 300) -> None:
        """A bad link, both ways: `loss` % of packets dropped at random (nftables' numgen, in the
        host's own namespace: its nft comes with the cluster's firewall), and the rate held to
        `rate_kbit` by a token bucket that queues up to `queue_ms` (delay once the link is busy)
        and drops beyond. Not netem: this machine's kernel has no sch_netem, so a fixed delay on
        every packet cannot be made here. `clear_link` ends it."""
        self._known(host)
        self.clear_link(host)
        drop = f"numgen random mod 100 < {int(loss)} counter drop"
        self.exec(host, "nft -f - <<'EOF'\n"
                        f"table inet {IMPAIR_TABLE} {{\n"
                        f"  chain in {{ type filter hook input priority -300; {drop}; }}\n"
                        f"  chain out {{ type filter hook output priority -300; {drop}; }}\n"
                        "}\nEOF")
        tbf = ["tbf", "rate", f"{int(rate_kbit)}kbit", "burst", "16kb", "latency", f"{int(queue_ms)}ms"]
        _run(["tc", "qdisc", "replace", "dev", self.veth(host), "root", *tbf])
        _run(["ip", "netns", "exec", self.netns(host), "tc", "qdisc", "replace", "dev", "eth0", "root", *tbf])

    def clear_link(self, host: str) -> int:
        """Undo `impair_link` (nothing to undo is fine); returns how many packets it dropped."""
        self._known(host)
        dropped = 0
        if self.init_pid(host):
            listed = self.exec(host, f"nft list table inet {IMPAIR_TABLE} 2>/dev/null; "
                                     f"nft delete table inet {IMPAIR_TABLE} 2>/dev/null || true").stdout
            dropped = sum(int(n) for n in re.findall(r"counter packets (\d+)", listed))
        _run(["tc", "qdisc", "del", "dev", self.veth(host), "root"], check=False)
        _run(["ip", "netns", "exec", self.netns(host), "tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
        return dropped

    # ---- mirror
    def _mirror_pid(self) -> int | None:
        try:
            pid = int((self.dir / "mirror.pid").read_text())
            if "http.server" in Path(f"/proc/{pid}/cmdline").read_text():
                return pid
        except (OSError, ValueError):
            pass
        return None

    def _mirror_up(self) -> None:
        """The lab's apt mirror on the bridge: mirror_root(), every release's suites."""
        if self._mirror_pid():
            return
        repo = mirror_root()
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
        from .inventory import render_lab_inventory
        _write(self.inventory, render_lab_inventory(self.name, hosts, self.release(hosts[0]) if hosts else "trixie",
                                                    str(self.cookie_file), str(self.ssh_config)), 0o644)

    def _etc_hosts(self) -> str:
        lines = ["127.0.0.1\tlocalhost\n", f"{self.bridge_ip}\t{MIRROR_NAME}\n"]
        lines += [f"{self.ip(h)}\t{h}\n" for h in self.hosts()]
        return "".join(lines)

    def _prepare_disk(self, host: str, release: str | None = None) -> None:
        """Give the host what a freshly installed server of its release has: name, keys,
        sources. `release` is that of a new disk; an existing disk keeps its own."""
        d = self.host_dir(host)
        upper = d / "upper"
        new = not (d / "upper").is_dir()
        for sub in ("upper", "work", "merged"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        if not (d / "release").is_file():     # a disk from before releases were recorded: bookworm's
            _write(d / "release", f"{check_release(release or default_release()) if new else 'bookworm'}\n", 0o644)
        release = self.release(host)
        etc = upper / "etc"
        _write(etc / "hostname", f"{host}\n", 0o644)
        _write(etc / "resolv.conf", "nameserver 127.0.0.1\n", 0o644)  # no DNS leaves the lab
        if new:      # an existing disk's sources are its own (an OS upgrade changes them)
            self._write_sources(etc, release)
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
        machine_id = etc / "machine-id"        # its own, for as long as it has this disk
        if not machine_id.is_file() or not machine_id.read_text().strip():
            _write(machine_id, f"{uuid.uuid4().hex}\n", 0o444)

    @staticmethod
    def _write_sources(etc: Path, release: str) -> None:
        """apt's sources: the lab mirror's suites of the release, as a server with backports
        enabled has them; in the form the release's installer writes (Debian 13: deb822)."""
        url = f"http://{MIRROR_NAME}:{MIRROR_PORT}"
        if release == "bookworm":
            _write(etc / "apt/sources.list",
                   "".join(f"deb [trusted=yes] {url}/{s}/ ./\n" for s in suites(release)), 0o644)
        else:
            _write(etc / "apt/sources.list.d/debian.sources",
                   "\n".join(f"Types: deb\nURIs: {url}/{s}/\nSuites: ./\nTrusted: yes\n" for s in suites(release)),
                   0o644)

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
    def _spawn(self, host: str) -> None:
        """Launch the host (returns at once): from its own cgroups, in a private mount
        namespace holding its overlay (over its release's base image), `systemd-nspawn --boot`
        of that overlay."""
        d = self.host_dir(host)
        rootfs = base_rootfs(self.release(host))
        self._host_net_up(host)
        self._clear_cgroups(host)
        for cg in self.cgroups(host):
            cg.mkdir(parents=True, exist_ok=True)
        merged = d / "merged"
        overlay = f"lowerdir={rootfs},upperdir={d / 'upper'},workdir={d / 'work'}"
        nspawn = [*NSPAWN, f"-M{self.machine(host)}", f"--hostname={host}", "-D", str(merged),
                  f"--network-namespace-path=/run/netns/{self.netns(host)}"]
        # A reboot from inside (`systemctl reboot`: nspawn exits 133) boots the host again on the
        # same disk, as a server's firmware does; any other end of nspawn is the power off.
        inner = (f"mount -t overlay overlay -o {shlex.quote(overlay)} {shlex.quote(str(merged))} || exit 1\n"
                 f"while :; do {shlex.join(nspawn)}; rc=$?; [ $rc -eq 133 ] || exit $rc; "
                 f"echo \"--- $(date '+%Y-%m-%d %H:%M:%S') reboot\"; done")
        # sh moves itself into the host's cgroups, then becomes unshare and the sh that runs
        # nspawn (both exec): the Popen PID is that sh's, the launcher's.
        script = "".join(f"echo $$ > {shlex.quote(str(cg / 'cgroup.procs'))} || exit 1\n"
                         for cg in self.cgroups(host))
        script += f"exec unshare --mount --propagation private sh -c {shlex.quote(inner)}"
        with open(d / "console.log", "ab") as console:
            console.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} boot\n".encode())
            console.flush()
            proc = subprocess.Popen(
                ["sh", "-c", script], cwd="/",
                # no image lock files: nothing in /run/systemd/nspawn/locks to leave behind
                env={**os.environ, "SYSTEMD_NSPAWN_LOCK": "0"},
                stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True)
        self._launched[host] = proc
        (d / "nspawn.pid").write_text(str(proc.pid))
        (d / "launched").write_text(str(time.time()))

    def _wait_booted(self, host: str, log: Log, timeout: float = BOOT_TIMEOUT) -> None:
        """Until sshd answers and `systemctl is-system-running` says running or degraded."""
        d = self.host_dir(host)
        with contextlib.suppress(OSError, ValueError):
            launched = float((d / "launched").read_text())
        deadline = time.monotonic() + timeout
        state = "not started"
        while True:
            pid = self.init_pid(host)
            if pid:
                proc = _run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w",
                             "systemctl", "is-system-running"], check=False, timeout=10)
                state = proc.stdout.strip() or "no answer"
                if state in ("running", "degraded") and self._sshd_listening(host):
                    break
                if state == "starting" and self._sshd_listening(host) and self._only_ejabberd_starting(pid):
                    state = "running, ejabberd still starting"   # e.g. waiting for its peers' tables
                    break
                if state in ("stopping", "offline") and not self._nspawn_pid(host):
                    raise LabError(f"{host} stopped while booting: see {d / 'console.log'}")
            elif not self._launcher_alive(host):
                raise LabError(f"{host} did not boot: see {d / 'console.log'}")
            if time.monotonic() > deadline:
                raise LabError(f"{host} did not finish booting within {timeout:.0f}s (systemd: {state}, "
                               f"sshd {'up' if self._sshd_listening(host) else 'down'}): "
                               f"see {d / 'console.log'}")
            time.sleep(0.1)
        took = f" after {time.time() - launched:.1f}s" if "launched" in locals() else ""
        if state == "degraded":
            failed = self.exec(host, "systemctl list-units --failed --plain --no-legend | cut -d' ' -f1",
                               check=False).stdout.split()
            log(f"{host}: up at {self.ip(host)}{took}, degraded (failed: {', '.join(failed)})")
        else:
            log(f"{host}: up at {self.ip(host)}{took}")

    def _sshd_listening(self, host: str) -> bool:
        """sshd listens on the host's address, seen from inside its network namespace. Not by
        connecting: OpenSSH 9.8 and later (Debian 13's 10.0) count a connection that never
        authenticates against its source (PerSourcePenalties, noauth), and a boot's worth of
        probes from the machine got the machine's address refused for minutes ("Error reading
        SSH protocol banner") just as the toolkit connects."""
        proc = _run(["ip", "netns", "exec", self.netns(host), "ss", "-Hltn", f"src {self.ip(host)}:22"],
                    check=False, timeout=10)
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def _only_ejabberd_starting(self, pid: int) -> bool:
        """Booted but for ejabberd.service: the only job still running is its start, the others
        (targets, utmp's runlevel record) wait for it (a node waiting for its tables may take
        minutes, as on a real server)."""
        proc = _run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w",
                     "systemctl", "list-jobs", "--no-legend", "--plain"], check=False, timeout=10)
        jobs = [line.split() for line in proc.stdout.splitlines() if len(line.split()) == 4]
        return any(unit == "ejabberd.service" for _, unit, _, _ in jobs) and \
            all(unit == "ejabberd.service" or state == "waiting" for _, unit, _, state in jobs)

    def up(self, nodes: int = 3, fresh: bool = False, release: str | None = None,
           log: Log = _quiet) -> list[str]:
        """Bring hosts lab1..labN up (idempotent); clear what a dead lab left behind. New hosts
        run `release` (default: default_release()); a host that has a disk keeps its release."""
        check_prerequisites()
        if not 1 <= nodes <= MAX_HOSTS:
            raise LabError(f"--nodes must be between 1 and {MAX_HOSTS}, not {nodes}")
        release = check_release(release or default_release())
        with _locked(labs_dir() / f".{self.name}.lock"):
            if fresh:
                self._down(purge=True, log=log)
            self._clear_stale(log)
            self._ensure_key()
            wanted = [f"lab{i}" for i in range(1, nodes + 1)]
            for h in wanted:
                self._prepare_disk(h, release)
                if self.release(h) != release:
                    log(f"{h}: keeps its disk's release, {self.release(h)} (`fab lab.wipe --release` to change it)")
            for r in moves_to({self.release(h) for h in wanted}):
                release_image(r, log)
            self._sync_etc_hosts()
            self._bridge_up()
            self._mirror_up()
            started = []
            for h in self.hosts():      # all boot at once...
                if h in wanted and not self.init_pid(h):
                    self._spawn(h)
                    started.append(h)
            for h in started:           # ...then wait for all
                self._wait_booted(h, log)
            self._write_lab_files()
            if not started:
                log(f"lab {self.name!r}: all {nodes} hosts already up, nothing to do")
            return started

    def _clear_stale(self, log: Log) -> None:
        """A lab that died (machine reboot, killed test run) leaves namespaces, links,
        cgroups and pid files behind: remove them so the lab can start clean."""
        live = {h for h in self.hosts() if self.init_pid(h)}
        prefix = f"ec-{self.name}-"
        for ns in _netns_list():
            if ns.startswith(prefix) and ns[len(prefix):] not in live:
                _run(["ip", "netns", "del", ns], check=False)
                log(f"cleared stale namespace {ns}")
        for h in self.hosts():
            if h not in live:
                self._power_cut(h)
                _run(["ip", "link", "del", self.veth(h)], check=False)
        if not self._mirror_pid():
            (self.dir / "mirror.pid").unlink(missing_ok=True)

    def _power_cut(self, host: str) -> None:
        """SIGKILL the host's PID 1 (the kernel kills its PID namespace) and its nspawn,
        then whatever is left in its cgroups; then remove its cgroups. Disk kept."""
        d = self.host_dir(host)
        for pid in filter(None, (self.init_pid(host), self._nspawn_pid(host))):
            _kill_wait(pid)
        deadline = time.monotonic() + 10
        while pids := self._cgroup_pids(host):    # nothing should be left; if it is, kill it
            if time.monotonic() > deadline:
                raise LabError(f"{host}: processes {sorted(pids)} survive in its cgroups")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in pids:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        _kill_referring(d)     # a launcher that never reached its cgroup
        self._clear_cgroups(host)
        # what a killed nspawn could not remove (/run is a disk on some machines)
        shutil.rmtree(Path("/run/systemd/nspawn/propagate", self.machine(host)), ignore_errors=True)
        Path("/run/systemd/nspawn/locks", f"name-{self.machine(host)}").unlink(missing_ok=True)
        for name in ("nspawn.pid", "launched", "init.pid", "unshare.pid", ".#merged.lck"):
            (d / name).unlink(missing_ok=True)

    def _clear_cgroups(self, host: str) -> None:
        """Remove the host's (empty) cgroup directories, deepest first."""
        for top in self.cgroups(host):
            if not top.is_dir():
                continue
            for dirpath, _dirs, _files in os.walk(top, topdown=False):
                try:
                    os.rmdir(dirpath)
                except OSError as exc:
                    raise LabError(f"cannot remove cgroup {dirpath}: {exc.strerror}") from None

    def _clear_lab_cgroups(self) -> None:
        for root in _cgroup_roots_if_any():
            for d in (root / "easycluster" / self.name, root / "easycluster"):
                with contextlib.suppress(OSError):
                    d.rmdir()     # the lab's own, then the shared parent if no other lab uses it

    def poweroff(self, host: str) -> None:
        """Power cut: SIGKILL the whole host (its PID 1; the kernel kills the rest). Disk kept."""
        with _locked(labs_dir() / f".{self.name}.lock"):
            self._known(host)
            self._power_cut(host)

    def boot(self, host: str, log: Log = _quiet) -> bool:
        """Boot a powered-off host on its disk: its systemd starts whatever is enabled."""
        check_prerequisites()
        with _locked(labs_dir() / f".{self.name}.lock"):
            self._known(host)
            release_image(self.release(host), log)
            if self.init_pid(host):
                log(f"{host}: already running")
                return False
            self._power_cut(host)
            self._prepare_disk(host)
            self._bridge_up()
            self._mirror_up()
            self._spawn(host)
            self._wait_booted(host, log)
            return True

    def wipe(self, host: str, release: str | None = None, log: Log = _quiet) -> None:
        """Power the host off and give it a fresh disk (and new host keys) of `release` (default:
        the release it had), then boot it."""
        release = check_release(release or self.release(self._known(host)))
        self.poweroff(host)
        with _locked(labs_dir() / f".{self.name}.lock"):
            shutil.rmtree(self.host_dir(host))
            self._prepare_disk(host, release)
            self._write_lab_files()
            self._sync_etc_hosts()
        self.boot(host, log)

    def down(self, purge: bool = False, log: Log = _quiet) -> None:
        with _locked(labs_dir() / f".{self.name}.lock"):
            self._down(purge, log)

    def _halt_all(self, hosts: list[str], log: Log) -> None:
        """Clean shutdown of every host at once (SIGTERM to nspawn: its guest halts);
        a host still running after HALT_TIMEOUT gets its power cut."""
        waiting = []
        for h in hosts:
            nspawn, init = self._nspawn_pid(h), self.init_pid(h)
            with contextlib.suppress(ProcessLookupError):
                if nspawn:
                    os.kill(nspawn, signal.SIGTERM)
                elif init:      # nspawn was lost: ask systemd itself (SIGRTMIN+4 = poweroff)
                    os.kill(init, signal.SIGRTMIN + 4)
            if nspawn or init:
                waiting.append((h, nspawn))
        deadline = time.monotonic() + HALT_TIMEOUT
        for h, nspawn in waiting:
            while self._cgroup_pids(h) and time.monotonic() < deadline:
                if nspawn:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(nspawn, os.WNOHANG)
                time.sleep(0.05)
            if self._cgroup_pids(h):
                log(f"{h}: no clean shutdown within {HALT_TIMEOUT}s: power cut")

    def _down(self, purge: bool, log: Log) -> None:
        hosts = self.hosts()
        self._halt_all(hosts, log)
        for h in hosts:
            self._power_cut(h)
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
        self._clear_lab_cgroups()
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)
        log(f"lab {self.name!r} down" + (" and its disks removed" if purge else " (disks kept)"))

    def status(self) -> list[HostState]:
        states = []
        for h in self.hosts():
            pid = self.init_pid(h)
            states.append(HostState(h, self.ip(h), pid is not None, pid,
                                    self._processes(pid) if pid else 0, self.link_up(h), self.os_release(h)))
        return states

    def exec(self, host: str, command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a shell command inside a host without SSH (for the lab's own checks): in all
        its namespaces, and in its cgroup (so a power cut takes it too)."""
        pid = self.init_pid(self._known(host))
        if not pid:
            raise LabError(f"{host} is not running")
        join = "".join(f"echo $$ > {shlex.quote(str(cg / 'cgroup.procs'))} 2>/dev/null; "
                       for cg in self.cgroups(host))
        enter = ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w",
                 "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "HOME=/root", "LANG=C.UTF-8", "sh", "-c", command]
        return _run(["sh", "-c", f"{join}exec {shlex.join(enter)}"], check=check, timeout=timeout)

    def node_eval(self, host: str, expr: str, timeout: float = 120) -> str:
        """Evaluate Erlang `expr` inside the running node of `host`, over real SSH; returns its
        value printed with ~p. From the toolkit's own hidden node (its script node_call.sh: the
        ejabberd user, the cookie file, the node's ERL_OPTIONS), rendered and sent on stdin as
        the toolkit's Host.script sends it. For tests and load runs that play an outcome
        directly (a race, a bulk registration) where the toolkit has no command for it."""
        call = (f"io:format(\"~p~n\", [rpc:call('ejabberd@{host}', erlang, apply, [fun() -> {expr} end, []], "
                "infinity)]), halt().")
        proc = subprocess.run(["ssh", "-F", str(self.ssh_config), host, "bash -c 'eval \"$(cat)\"'"],
                              input=render_script("node_call", name_flag="-sname", expr=call),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise LabError(f"node_eval on {host} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout.strip()


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


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _status_field(pid: int, field: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _nspid(pid: int) -> int | None:
    """The PID of `pid` in its own (innermost) PID namespace."""
    value = _status_field(pid, "NSpid")
    return int(value.split()[-1]) if value else None


def _state(pid: int) -> str | None:
    value = _status_field(pid, "State")
    return value[0] if value else None


def _kill_referring(path: Path) -> None:
    """Kill what a lost pid file no longer names: processes started for `path` (an
    argument that is `path` or names something below it)."""
    whole, below = str(path).encode(), str(path).encode() + b"/"
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if any(arg == whole or below in arg for arg in args):
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
