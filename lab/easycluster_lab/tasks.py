"""`fab lab.*`: the local lab of real SSH hosts (needs root). See easycluster_lab/lab.py.

Registered with easycluster through the `easycluster.collections` entry point, so the product
never imports the lab: installed, it shows up as `fab lab.*` (and `easycluster lab.*`)."""

from __future__ import annotations

from invoke import task

from invoke import Collection

from easycluster.tasks._common import operator_errors, say, timed_say

from .lab import Lab


@task(help={"nodes": "how many hosts, lab1..labN (default 3)",
            "fresh": "remove the lab's hosts and disks first",
            "release": "the Debian release of new hosts: trixie (13, the default; or $EASYCLUSTER_LAB_RELEASE) "
                       "or bookworm (12); hosts that have a disk keep theirs"})
@operator_errors
def up(c, nodes=3, fresh=False, release=None):
    """Bring the lab up (idempotent; adds hosts when --nodes grows)."""
    lab = Lab()
    lab.up(int(nodes), fresh=fresh, release=release, log=timed_say(f"lab {lab.name}: "))
    say(f"inventory: {lab.inventory}")
    say(f"ssh:       ssh -F {lab.ssh_config} lab1")


@task(help={"purge": "also remove the hosts' disks"})
@operator_errors
def down(c, purge=False):
    """Stop every host; leave no namespace, bridge, mount or process behind."""
    Lab().down(purge=purge, log=say)


@task
@operator_errors
def status(c):
    """Show the lab's hosts: running, PID, processes, link."""
    lab = Lab()
    states = lab.status()
    if not states:
        say(f"lab {lab.name!r} has no hosts: `fab lab.up`")
        return
    say(f"{'host':<6} {'address':<14} {'release':<9} {'state':<8} {'pid':>7} {'procs':>5}  link")
    for s in states:
        say(f"{s.name:<6} {s.ip:<14} {s.release:<9} {'running' if s.running else 'off':<8} "
            f"{s.pid or '-':>7} {s.processes:>5}  {'up' if s.link_up else 'CUT'}")


@task(help={"host": "lab host, e.g. lab2"})
@operator_errors
def poweroff(c, host):
    """SIGKILL a whole host (every process on it); its disk is kept."""
    Lab().poweroff(host)
    say(f"{host}: powered off")


@task(help={"host": "lab host, e.g. lab2"})
@operator_errors
def boot(c, host):
    """Boot a powered-off host on its existing disk."""
    Lab().boot(host, log=say)


@task(help={"host": "lab host, e.g. lab2",
            "release": "the new disk's Debian release: trixie or bookworm (default: the host's own)"})
@operator_errors
def wipe(c, host, release=None):
    """Give a host a fresh disk (a newly installed server) and boot it."""
    Lab().wipe(host, release=release, log=say)
    say(f"{host}: wiped")


@task(help={"host": "lab host, e.g. lab2"})
@operator_errors
def partition(c, host):
    """Cut a host's network link: it keeps running, nothing reaches it."""
    Lab().partition(host)
    say(f"{host}: link cut")


@task(help={"host": "lab host, e.g. lab2"})
@operator_errors
def heal_link(c, host):
    """Restore a host's network link."""
    Lab().heal_link(host)
    say(f"{host}: link restored")


ns = Collection(up, down, status, poweroff, boot, wipe, partition, heal_link)
