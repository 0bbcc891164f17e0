"""A rolling upgrade whose step fails on a node brings that node back on what it ran before,
then fails (pure: no lab).

way_back (which steps, for which failed step) is a table; the rolling apply runs against a
fake of nodectl, the fact probe and the cluster's watch, which records what would be done.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from casefacts import COOKIE, converged
from easycluster import nodectl, probe
from easycluster.ops import upgrade as upgrade_mod
from easycluster.errors import EasyClusterError, RemoteError, StepFailed
from easycluster.facts import HostFacts
from easycluster.inventory import load_inventory
from easycluster.paths import UNIT_DROPIN
from easycluster.progress import Progress
from easycluster.ops.upgrade import (BACK, CONFIGURE, INSTALL, RESTART, ROLLING, START, STOP, WAIT, UpgradePlan,
                                 way_back)

OLD, NEW = "23.01-1", "24.12-3~bpo12+1"
HOSTS = ["lab1", "lab2", "lab3"]


@pytest.mark.parametrize("failed, installed, before, steps", [
    # the stop itself: the package is untouched, the node maybe drained (serving nobody)
    (STOP, OLD, OLD, [RESTART, WAIT]),
    (STOP, None, None, [RESTART, WAIT]),
    # the install: the old version again only if the package changed (or cannot be told)
    (INSTALL, OLD, OLD, [START, WAIT]),
    (INSTALL, NEW, OLD, [INSTALL, START, WAIT]),
    (INSTALL, None, OLD, [INSTALL, START, WAIT]),
    # the new files and plugin: the old version's again
    (CONFIGURE, NEW, OLD, [INSTALL, CONFIGURE, START, WAIT]),
    (CONFIGURE, OLD, OLD, [CONFIGURE, START, WAIT]),
    # the start: stopped first (systemd may be restarting it in a loop)
    (START, NEW, OLD, [STOP, INSTALL, CONFIGURE, START, WAIT]),
    (START, None, OLD, [STOP, INSTALL, CONFIGURE, START, WAIT]),
    # started, not back in time: it runs (the new version); nothing to bring back
    (BACK, NEW, OLD, []),
    # the version it ran is unknown: nothing to go back to
    (INSTALL, None, None, []),
    (START, NEW, None, []),
])
def test_which_steps_bring_a_node_back(failed, installed, before, steps):
    assert way_back(failed, installed, before) == steps


# --------------------------------------------------------------------------- the rolling apply, faked

def inventory(tmp_path: Path, version: str):
    text = (f"cluster:\n  name: t\n  ejabberd_version: \"{version}\"\n  domains: [t.test]\n"
            f"  cookie: {{file: {tmp_path}/cookie}}\nnodes:\n" + "".join(f"  - host: {h}\n" for h in HOSTS))
    path = tmp_path / f"inventory-{version}.yml"
    path.write_text(text)
    return load_inventory(str(path), None)


class FakeHost:
    def __init__(self, name: str, node):
        self.name, self.node = name, node


class Recorder:
    """What the apply asked, in order; `fail`: (call, n) fails the n-th such call (1-based)."""

    def __init__(self, fail: list[tuple[str, int]], installed: str | None):
        self.calls: list[str] = []
        self.fail = fail
        self.installed = installed
        self.written: list[dict[str, str]] = []

    def __call__(self, call: str, host: str) -> None:
        self.calls.append(call)
        if (call, self.calls.count(call)) in self.fail:
            raise RemoteError(host, call, "boom")


@pytest.fixture
def rolling(tmp_path, monkeypatch):
    """run(fail, installed) -> (the exception raised, the recorder, the apply, the output)."""
    old, new = inventory(tmp_path, OLD), inventory(tmp_path, NEW)
    facts = {h: converged(old, h) for h in HOSTS}

    def run(fail: list[tuple[str, int]], installed: str | None):
        rec = Recorder(fail, installed)

        def configure(h, files, plugin, shared=None):
            rec("configure", h.name)
            rec.written.append({mf.path: mf.data().decode() for mf in files})
            return [], None

        def install(h, version, download_only=False, extra=()):
            rec(f"install {version}", h.name)

        def wait(inv, fleet, ready, bound, what, interval=1.0):
            rec("wait", "cluster")
            return upgrade_mod.ClusterHealth([])

        def gather_one(h, inv, probe_network=True, ctl="self"):
            rec.calls.append("read the installed version")
            return HostFacts(host=h.name, os_id="debian", os_version="12", ejabberd_version=rec.installed)
        monkeypatch.setattr(nodectl, "drain_and_stop", lambda h, seconds: rec("drain_and_stop", h.name))
        monkeypatch.setattr(nodectl, "install", install)
        monkeypatch.setattr(nodectl, "configure", configure)
        monkeypatch.setattr(nodectl, "start", lambda h, c2s: rec("start", h.name))
        monkeypatch.setattr(nodectl, "stop", lambda h: rec("stop", h.name))
        monkeypatch.setattr(nodectl, "restart", lambda h, c2s: rec("restart", h.name))
        monkeypatch.setattr(upgrade_mod, "wait_for", wait)
        monkeypatch.setattr(probe, "gather_one", gather_one)
        fleet = {h: FakeHost(h, new.node(h)) for h in HOSTS}
        plan = UpgradePlan(NEW, {h: OLD for h in HOSTS}, ROLLING, order=["lab2", "lab3", "lab1"])
        out: list[str] = []
        apply = upgrade_mod._Upgrade(new, fleet, facts, plan, Progress(out.append), COOKIE, None)
        with pytest.raises(EasyClusterError) as raised:
            apply.rolling()
        return raised.value, rec, apply, out
    return run


STEP_OF = {"drain_and_stop": "drain (5s) and stop", f"install {NEW}": f"install ejabberd {NEW}", "configure": "write ",
           "start": "start", "wait": "back in every peer's running_db_nodes"}   # the failing call's step
UPGRADE = ["drain_and_stop", f"install {NEW}", "configure", "start", "wait"]
CASES = [
    # (case, failing call, installed version afterwards, calls, brought back?)
    ("stop fails", [("drain_and_stop", 1)], OLD, ["drain_and_stop", "restart", "wait"], True),
    ("install fails, package unchanged", [(f"install {NEW}", 1)], OLD,
     ["drain_and_stop", f"install {NEW}", "read the installed version", "start", "wait"], True),
    ("install fails half-way", [(f"install {NEW}", 1)], None,
     ["drain_and_stop", f"install {NEW}", "read the installed version", f"install {OLD}", "start", "wait"], True),
    ("configure fails", [("configure", 1)], NEW,
     ["drain_and_stop", f"install {NEW}", "configure", "read the installed version", f"install {OLD}", "configure",
      "start", "wait"], True),
    ("start fails", [("start", 1)], NEW,
     ["drain_and_stop", f"install {NEW}", "configure", "start", "read the installed version", "stop",
      f"install {OLD}", "configure", "start", "wait"], True),
    ("not back in time", [("wait", 1)], NEW, UPGRADE, False),
    ("the way back fails too", [("start", 1), (f"install {OLD}", 1)], NEW,
     ["drain_and_stop", f"install {NEW}", "configure", "start", "read the installed version", "stop",
      f"install {OLD}"], False),
]


@pytest.mark.parametrize("fail, installed, calls, back", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_failed_node_is_brought_back_and_the_run_fails(rolling, fail, installed, calls, back):
    raised, rec, apply, out = rolling(fail, installed)
    assert rec.calls == calls                                   # lab2 only: the run stops at its failure
    assert isinstance(raised, StepFailed) and raised.host == "lab2"   # the original failure, raised
    assert raised.step.startswith(STEP_OF[fail[0][0]])
    assert (apply.brought_back == ["lab2"]) is back
    where = apply.where_it_stopped()
    if back:
        assert apply.stopped == [] and apply.upgraded == []
        assert "brought back on the version they ran before: lab2" in where
        assert out[-1] == f"[lab2] ejabberd@lab2 is back on ejabberd {OLD} and serves; the upgrade stops here"
    elif fail[0][0] == "wait":
        assert apply.stopped == [] and apply.upgraded == ["lab2"] and not any("back on" in line for line in out)
    else:
        assert apply.stopped == ["lab2"] and "stopped: lab2" in where
        assert out[-1].startswith(f"[lab2] ejabberd@lab2 could NOT be brought back on ejabberd {OLD}: ")


def test_the_way_back_writes_the_files_and_plugin_for_the_old_version(rolling):
    """23.01's unit needs its watchdog off (WatchdogSec=0), 24.12's has none: the drop-in the
    upgrade wrote for the new version is written again as it was."""
    _, rec, _, _ = rolling([("start", 1)], NEW)
    new_files, old_files = rec.written
    assert UNIT_DROPIN in new_files and "WatchdogSec" not in new_files[UNIT_DROPIN]
    assert set(old_files) == set(new_files)
    assert "WatchdogSec=0" in old_files[UNIT_DROPIN]
