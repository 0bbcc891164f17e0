"""Shared fixtures. Tests that talk to hosts use the session's own lab ("test"),
brought up fresh once and torn down at the end; pure-logic tests need nothing."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
import sys
from pathlib import Path

import pytest
import yaml

# JOIN_PAUSE: the plugin's fault-injection point; JOIN_PROGRESS: its join's log (the plugin's own
# spelling of both is held to easycluster.paths by tests/test_plugin_options.py)
from easycluster.paths import JOIN_PAUSE, JOIN_PROGRESS
from easycluster_lab import Lab

TEST_LAB = os.environ.get("EASYCLUSTER_TEST_LAB", "test")   # another name: a second session alongside
FAB = Path(sys.executable).parent / "fab"
REPO = Path(__file__).resolve().parent.parent


def pinned_version(lab: Lab) -> str:
    """The ejabberd version the lab's inventory pins (its first host's release's)."""
    return yaml.safe_load(lab.inventory.read_text())["cluster"]["ejabberd_version"]


def fab(*args: str, lab: str = TEST_LAB, check: bool = True, env: dict | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `fab ARGS` as an operator would, against the given lab's inventory."""
    # always the test lab's inventory, whatever the calling shell has set
    full_env = {**os.environ, "EASYCLUSTER_LAB": lab, "EASYCLUSTER_INVENTORY": str(Lab(lab).inventory),
                **(env or {})}
    proc = subprocess.run([str(FAB), *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"fab {' '.join(args)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def fab_paused_in_join(lab: Lab, host: str, *args: str, inventory: Path | None = None) -> subprocess.Popen:
    """`fab ARGS` in the background, held just before HOST's join copies tables (the plugin
    waits while JOIN_PAUSE exists); returns once it is held there. Remove the file to go on. Output: stdout and stderr as one."""
    ssh(lab, host, f"install -d /run/ejabberd; rm -f {JOIN_PROGRESS}; touch {JOIN_PAUSE}")
    proc = subprocess.Popen([str(FAB), *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "EASYCLUSTER_LAB": lab.name,
                                 "EASYCLUSTER_INVENTORY": str(inventory or lab.inventory)})
    deadline = time.monotonic() + 180
    while ssh(lab, host, f"grep -qs paused {JOIN_PROGRESS}", check=False).returncode != 0:
        assert proc.poll() is None, f"fab {' '.join(args)} ended before the pause:\n{proc.communicate()}"
        assert time.monotonic() < deadline, "the join never reached the pause point"
        time.sleep(0.3)
    return proc


def ssh(lab: Lab, host: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command on a lab host over real SSH, as any client would."""
    proc = subprocess.run(["ssh", "-F", str(lab.ssh_config), host, command],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"ssh {host} {command!r} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def node_eval(lab: Lab, host: str, expr: str, timeout: float = 60) -> str:
    """Evaluate Erlang `expr` inside the running node of `host` (Lab.node_eval: from the
    toolkit's own hidden node, over SSH); returns the value printed with ~p. For playing a
    race's outcome directly, where waiting for the race itself would make a test a lottery."""
    return lab.node_eval(host, expr, timeout)


# What systemd logs when it kills or restarts a node behind the toolkit's back.
UNIT_TROUBLE = ("Watchdog timeout", "Scheduled restart job", "timed out", "Killing process", "Failed with result")


def unit_trouble(lab: Lab, hosts: list[str], since: float) -> dict[str, list[str]]:
    """Per host, what is wrong with ejabberd.service: not active (running), restarted by systemd
    (NRestarts), or journal lines since `since` (epoch seconds) showing a watchdog, a timeout, a
    kill or a restart. Empty lists: every unit ran cleanly."""
    found = {}
    for host in hosts:
        out = ssh(lab, host, "systemctl show ejabberd -p ActiveState -p SubState -p NRestarts | awk -F= "
                             "'{v[$1] = $2} END {print v[\"ActiveState\"], v[\"SubState\"], v[\"NRestarts\"]}'; "
                             f"journalctl -u ejabberd --since @{int(since)} --no-pager -o cat").stdout
        state, _, journal = out.partition("\n")
        active, sub, restarts = (state.split() + ["?", "?", "?"])[:3]
        trouble = [] if (active, sub, restarts) == ("active", "running", "0") else [f"unit {active} ({sub}), "
                                                                                    f"NRestarts {restarts}"]
        trouble += [line for line in journal.splitlines() if any(t in line for t in UNIT_TROUBLE)]
        found[host] = trouble
    return found


def assert_units_clean(lab: Lab, hosts: list[str], since: float) -> None:
    trouble = {h: t for h, t in unit_trouble(lab, hosts, since).items() if t}
    assert not trouble, f"ejabberd.service not running cleanly: {trouble}"


def unit_state(lab: Lab, host: str) -> tuple[str, str]:
    """(is-active, is-enabled) of ejabberd.service on the host."""
    out = ssh(lab, host, "systemctl is-active ejabberd; systemctl is-enabled ejabberd", check=False).stdout.split()
    return (out + ["?", "?"])[0], (out + ["?", "?"])[1]


# Modules that share the session lab run in this order (each builds on the last).
MODULE_ORDER = ["test_lab", "test_deploy", "test_package", "test_membership", "test_failover", "test_delivery",
                "test_monitoring_lab", "test_upgrade"]
# Modules with labs of their own that run after those, on the session lab's worker, so that both
# streams take about as long (measured 2026-12-07 with --durations=0: the own labs' stream took
# 1848 s, the session lab's 1225 s; test_satellites took 244 s, test_tls 73 s: it went back to the
# own labs' stream when test_monitoring_lab, ~150 s, joined the session lab's).
AFTER_SESSION_LAB = ["test_satellites"]


# First (tryfirst): pytest-xdist reads the groups in a hook of its own, after this one.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    def module(item) -> str:
        return item.module.__name__.rsplit(".", 1)[-1]

    def rank(item):
        order = MODULE_ORDER + AFTER_SESSION_LAB
        return order.index(module(item)) if module(item) in order else -1   # pure tests first
    items.sort(key=rank)
    for item in items:
        # Lab tests are marked by using the lab fixtures; mark them for `-m "not lab"`.
        if {"lab", "scratch_lab"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)
        # Two streams for `make test` (-n 2 --dist loadgroup): the modules that share the session
        # lab, in their order, then AFTER_SESSION_LAB's, on one worker; the other modules with labs
        # of their own (own_lab) on the other, one after another; pure tests wherever a worker is free.
        if module(item) in AFTER_SESSION_LAB:
            item.add_marker(pytest.mark.xdist_group("session-lab"))
        elif hasattr(item.module, "own_lab"):
            item.add_marker(pytest.mark.xdist_group("own-labs"))
        elif module(item) in MODULE_ORDER:
            item.add_marker(pytest.mark.xdist_group("session-lab"))


@pytest.fixture(scope="session")
def lab():
    """The session's 3-host lab, fresh at the start, gone at the end."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with lab_owned(TEST_LAB):
        the_lab = Lab(TEST_LAB)
        the_lab.up(3, fresh=True)
        yield the_lab
        if not os.environ.get("EASYCLUSTER_KEEP_LAB"):  # keep it to look at after a failure
            the_lab.down(purge=True)


@contextlib.contextmanager
def lab_owned(name: str):
    """One test session at a time owns the lab of that name: a second one (another checkout,
    another engineer's run) waits here instead of tearing the first one's hosts down."""
    with open(f"/run/easycluster-test-lab-{name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"\nwaiting for another test session's lab {name!r}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture
def scratch_lab(request):
    """A small throwaway lab of its own, for tests that break or grow a whole lab."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = request.param
    with lab_owned(name):
        the_lab = Lab(name)
        the_lab.down(purge=True)
        yield the_lab
        the_lab.down(purge=True)


@contextlib.contextmanager
def own_lab(name: str, hosts: int, release: str | None = None):
    """A fresh lab of a test module's own (not the session's), of `release` (default: the lab's,
    Debian 13), gone afterwards unless EASYCLUSTER_KEEP_LAB is set."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with lab_owned(name):
        the_lab = Lab(name)
        the_lab.down(purge=True)
        the_lab.up(hosts, fresh=True, release=release)
        try:
            yield the_lab
        finally:
            if not os.environ.get("EASYCLUSTER_KEEP_LAB"):
                the_lab.down(purge=True)
