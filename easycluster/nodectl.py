"""What easycluster does on one host, each action one batched remote script.

Nodes run under Debian's ejabberd.service (systemd), and only there: every start, stop and
restart goes through the unit (`systemctl is-active ejabberd` and the journal tell the truth),
and nothing stops the ejabberd application inside a running VM (under Type=notify that leaves
the unit deactivating until systemd kills the node). A start is asked with --no-block and
then watched, with a bound of its own: a unit that fails or falls into a restart loop is named
with the journal's last lines and error.log's tail.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import JoinFailed, RemoteError, RemoteOverdue
from .paths import HEAL_CARRY, MNESIA_BACKUP_DIR
from .remote import Host, Result
from .render import ManagedFile, plugin_sources
from .scripts import render

START_BOUND = 90      # seconds for a node to report started
STOP_BOUND = 130      # the unit's TimeoutStopSec (120) and a little
SETTLE_BOUND = 10     # seconds a restarted node is given to finish its start's work
SETTLED_PCT = 30      # % of one core: a VM using less over half a second has settled
REBOOT_BOUND = 300    # seconds for a rebooted host to answer over SSH again


def _unit(name: str, c2s_port: int, **params) -> str:
    """A script that starts a node (ec_start, ec_wait_started: lib.sh), with its bound."""
    return render(name, c2s_port=c2s_port, start_bound=START_BOUND, **params)


def install(host: Host, version: str, download_only: bool = False, extra: tuple[str, ...] = ()) -> None:
    """apt-get install the pinned ejabberd without starting it (policy-rc.d), as on any Debian
    (`download_only`: only fetch its packages into apt's cache; `extra`: packages along, plan.packages)."""
    host.script(render("install", version=version, download_only=download_only, extra=extra),
                what=f"{'downloading' if download_only else 'installing'} ejabberd {version}", timeout=900)


def os_move(host: Host, from_codename: str, to_codename: str, version: str, stamp: str,
            extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Move the host (its node stopped) to the next Debian release with the pinned ejabberd
    (os_move.sh: resumable); returns its copy=, version= and release= lines."""
    r = host.script(render("os_move", from_release=from_codename, to_release=to_codename, version=version, extra=extra,
                           stamp=stamp),
                    what=f"moving to Debian {to_codename}", timeout=1800)
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def boot_id(host: Host) -> str:
    r = host.script(render("boot_id"), what="reading which boot this is", timeout=30)
    return r.stdout.strip().removeprefix("boot=")


def reboot(host: Host, bound: float = REBOOT_BOUND) -> float:
    """Reboot the host and wait until it answers over SSH from its new boot (a new connection);
    the seconds it took."""
    start = time.monotonic()
    asked = host.script(render("reboot"), what="asking for a reboot", timeout=30).stdout
    before = next((line[5:] for line in asked.splitlines() if line.startswith("boot=")), "")
    host.reconnect()
    last = "no answer yet"
    time.sleep(1)
    while time.monotonic() - start < bound:
        try:
            now = boot_id(host)
            if now and now != before:
                return time.monotonic() - start
            last = "still its old boot"
        except RemoteError as exc:
            last = exc.detail
        host.reconnect()
        time.sleep(1)
    raise RemoteError(host.name, "rebooting", f"not back over SSH within {bound:.0f}s ({last})")


@dataclass(frozen=True)
class PluginBuild:
    """The plugin as compiled on one host: hosts with the same ejabberd and Erlang packages
    install this beam instead of running erlc themselves (~0.5 s of CPU each)."""
    built_with: str
    beam: bytes          # a tar of the plugin's beams


def plugin_export(host: Host) -> PluginBuild:
    """The plugin's beams as `host` has them installed (a member whose plugin is the current
    one), for a host with the same packages: no erlc there."""
    lines = host.script(render("plugin_export"), what="reading the installed plugin").stdout.splitlines()
    found = {k: v for k, _, v in (line.partition("=") for line in lines) if k in ("built_with", "beam")}
    return PluginBuild(found["built_with"], base64.b64decode(found["beam"]))


def configure(host: Host, files: list[ManagedFile], plugin: bool,
              shared: PluginBuild | None = None) -> tuple[list[tuple[str, str]], PluginBuild | None]:
    """Upload changed files (and the plugin source) by SFTP, then install them in one
    script: timestamped backup of each replaced file, then owner/mode, then the plugin
    (`shared`'s beam if this host's packages are the ones it was built with, else compiled
    here). Returns (path, backup) of every file replaced, and the plugin build if compiled
    here. A change that needs a restart leaves a marker until the restart is done, so a run
    that died in between is finished by the next one."""
    staging = host.script(render("staging"), what="making a staging directory").stdout.strip()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    try:
        for i, mf in enumerate(files):
            host.put_bytes(mf.data(), f"{staging}/{i}")
        if plugin:
            for name, source in plugin_sources().items():
                host.put_bytes(source, f"{staging}/src/{name}")
            if shared:
                host.put_bytes(shared.beam, f"{staging}/shared.tar")
        result = host.script(render(
            "configure", staging=staging, stamp=stamp, restart=any(mf.restart for mf in files), plugin=plugin,
            # a replaced cookie is not kept: no copies of a secret lying in backups
            backups=[mf.path for mf in files if not mf.secret],
            installs=[word for mf in files for word in (f"{mf.mode:o}", mf.owner, mf.group, mf.path)],
            shared_built_with=shared.built_with if shared else ""), what="writing configuration")
    except RemoteError:
        remove(host, staging, recursive=True, check=False)
        raise
    lines = result.stdout.splitlines()
    found = {k: v for k, _, v in (line.partition("=") for line in lines) if k in ("built_with", "beam")}
    build = PluginBuild(found["built_with"], base64.b64decode(found["beam"])) if "beam" in found else None
    return [tuple(line[7:].split(":", 1)) for line in lines if line.startswith("backup=")], build


def restore_and_start(host: Host, backups: list[tuple[str, str]], c2s_port: int) -> None:
    """Put the replaced files back (owner and mode kept by cp -p) and start the node."""
    host.script(_unit("restore_files", c2s_port, restores=[word for path, backup in backups for word in (backup, path)]),
                what="restoring the previous configuration", timeout=START_BOUND + STOP_BOUND + 30)


def start(host: Host, c2s_port: int) -> None:
    host.script(_unit("start", c2s_port), what="starting ejabberd", timeout=START_BOUND + 30)


def stop(host: Host) -> None:
    host.script(render("stop"), what="stopping ejabberd", timeout=STOP_BOUND + 30)


def restart(host: Host, c2s_port: int) -> None:
    host.script(_unit("restart", c2s_port), what="restarting ejabberd", timeout=START_BOUND + STOP_BOUND + 30)


def reload_config(host: Host) -> None:
    ctl(host, "reload_config", what="reloading ejabberd.yml")


def status(host: Host) -> dict | None:
    """The node's easy_cluster_status, or None if it does not answer."""
    return ctl_json(host, "easy_cluster_status", what="reading cluster status", timeout=None, or_none=True)


JOIN_BOUND = 3600
POLL_TIMEOUT = 15     # a host silent this long while a join or a backup is followed is cut off
JOIN_HEARTBEAT = 2    # seconds between the signs of life of what is followed (a join, a backup)
BACKUP_BOUND = 3600


def launch_joining(host: Host, seed: str) -> None:
    """The start of a node (stopped, holding no Mnesia data) that joins `seed` while it boots:
    the plugin's boot_join, the only join there is. The VM boots, loads ejabberd's code and
    waits for its turn (boot_join below). Returns at once. The join marker is written first."""
    marker = json.dumps({"seed": seed, "since": _now(), "at_boot": True})
    host.script(render("launch_joining", seed=seed, marker=marker), what=f"starting to join {seed} at boot",
                timeout=60)


def boot_join(host: Host, on_progress=lambda line: None) -> dict:
    """Give a node launched by launch_joining its turn and follow its join to the end (Mnesia
    joined, every table copied; ejabberd then starts by itself: see wait_started), in one call
    that prints the plugin's progress as it is written (join_follow.sh); a host silent for
    POLL_TIMEOUT seconds is cut off."""
    host.script(render("join_turn"), what="giving the join its turn")
    lines: list[str] = []

    def line(text: str) -> None:
        if not text.startswith("@@ "):
            lines.append(text)
            on_progress(text)
    try:
        host.follow(render("join_follow", heartbeat=JOIN_HEARTBEAT), line, silence=POLL_TIMEOUT,
                    bound=JOIN_BOUND, what="following the join")
    except RemoteOverdue:
        raise JoinFailed(host.name, f"the join did not finish within {JOIN_BOUND}s") from None
    except RemoteError as exc:
        raise JoinFailed(host.name, f"lost contact with the host during the join ({exc.detail})",
                         lost=True) from None
    progress = "\n".join(lines)
    results = [line[len("result "):] for line in progress.splitlines() if line.startswith("result ")]
    answer = last_json(results[-1]) if results else {}
    if answer.get("ok"):
        return answer
    if answer:
        raise JoinFailed(host.name, f"step {answer.get('failed_step')!r} failed: {answer.get('reason')}", answer)
    # the VM's own last words (init's "Kernel pid terminated", a crash of the boot function) go
    # to its stdout, which is the unit's journal, not error.log: both are shown
    tail = host.script(render("log_tail"), check=False, what="reading why the node died").stdout.strip()
    raise JoinFailed(host.name, "the node died during its join" + (f":\n{tail}" if tail else ""))


def wait_started(host: Host, c2s_port: int) -> None:
    """Wait for a node already launched to report started (failure: the tail of error.log);
    it runs the configuration it was launched with, so no restart is pending any more."""
    host.script(_unit("wait_started", c2s_port), what="waiting for ejabberd to start", timeout=START_BOUND + 30)


def wait_settled(host: Host) -> tuple[bool, int]:
    """Wait (at most SETTLE_BOUND s) until a node just back has done the work its start left:
    its VM below SETTLED_PCT % of a core. A node that reloaded its tables from a peer goes on
    rewriting their dets files for seconds; the next node of a rolling restart reloads from it
    and, on shared cores, beside it. Returns (settled, its last % of a core)."""
    r = host.script(render("wait_settled", bound=SETTLE_BOUND, settled_pct=SETTLED_PCT),
                    what="waiting for the node to settle", timeout=SETTLE_BOUND + 30)
    state, _, pct = r.stdout.strip().rpartition("\n")[2].partition(" ")
    return state == "settled", int(pct or 0)


def abort_boot_join(host: Host) -> None:
    """A node waiting for its join's turn holds nothing yet (no schema, Mnesia not started):
    stop it through its unit (a stop is never followed by a restart; a kill would be, by
    Restart=on-failure) and take back the first-start files and the translation cache it built."""
    host.script(render("abort_boot_join"), what="stopping a node waiting to join", timeout=STOP_BOUND + 30)


def last_json(text: str) -> dict:
    """The last line of `text` that is a JSON object (ejabberdctl may print more before it)."""
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def clear_joining(host: Host, member: bool) -> None:
    """The join is verified (`member`: the unit is enabled, so a reboot starts the node) or was
    refused, changing nothing (the VM halted: its unit is left cleanly inactive). The join's
    marker and files go."""
    host.script(render("clear_joining", member=member), what="clearing the join marker")


def forget(host: Host, node_name: str) -> dict:
    """On a running member: remove a stopped node from the schema (plugin)."""
    return ctl_json(host, "easy_cluster_forget", node_name, what=f"removing {node_name} from the schema",
                    timeout=180)


def stop_and_wipe(host: Host) -> str | None:
    """Stop the node through its unit and disable it (a reboot must not start a node that is no
    member), then empty its Mnesia directory, keeping the cookie; what was there is kept in a
    tarball first (path returned, None if empty)."""
    r = host.script(render("stop_and_wipe"), what="stopping and wiping the node", timeout=STOP_BOUND + 120)
    found = [line[8:] for line in r.stdout.splitlines() if line.startswith("tarball=")]
    return found[0] if found else None


def drain_and_stop(host: Host, seconds: int) -> None:
    """Close the listeners and every client session (the plugin; clients reconnect to other
    nodes, messages queued for them are routed on, not lost), then stop and wait for the VM.
    ejabberd's own stop_kindly keeps the sessions until the stop itself, which drops what is
    in flight to them."""
    host.script(render("drain_and_stop", drain_seconds=int(seconds)), what="draining and stopping",
                timeout=seconds + STOP_BOUND + 60)


def drain(host: Host, seconds: int) -> dict:
    """Close the listeners and every client session, and leave the node running (a restart
    comes next): no client writes to it any more."""
    return ctl_json(host, "easy_cluster_drain", str(int(seconds)), what="draining", timeout=seconds + 60)


def backup(host: Host, label: str, keep: int, spare: str | None = None, on_active=lambda: None) -> tuple[str, int]:
    """A full Mnesia backup (schema and every table) taken on this running node; the
    newest `keep` are kept, and `spare` (a backup about to be restored) whatever its age.
    Returns (path, bytes). Through the plugin: the file `ejabberdctl backup` writes, ~30x
    faster for disc_only_copies tables (12.4 s -> 0.35 s for 200,000 records). on_active() is
    called as soon as its checkpoint is active: what the backup holds is fixed from then on."""
    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"
    path = f"{MNESIA_BACKUP_DIR}/{label}.{stamp}.backup"
    lines: list[str] = []

    def line(text: str) -> None:
        if text == "@@ active":
            on_active()
        elif not text.startswith("@@ "):
            lines.append(text)
    what = "taking a Mnesia backup"
    r = host.follow(render("backup", backup=path, keep=keep, spare=spare or "-", heartbeat=JOIN_HEARTBEAT), line,
                    silence=POLL_TIMEOUT, bound=BACKUP_BOUND, what=what)
    if not r.ok or not lines or not lines[-1].strip().isdigit():
        raise RemoteError(host.name, what, " | ".join(lines[-3:]) or r.stderr.strip()[-300:] or f"exit {r.rc}")
    return path, int(lines[-1])


def wait_status(host: Host, ready, bound: float = 120, interval: float = 0.3) -> dict:
    """Poll easy_cluster_status until ready(status) holds; return the last status."""
    deadline = time.monotonic() + bound
    last = None
    while True:
        last = status(host)
        if last is not None and ready(last):
            return last
        if time.monotonic() > deadline:
            raise RemoteError(host.name, f"not ready within {bound:.0f}s",
                              json.dumps({k: last.get(k) for k in ("running_db_nodes", "missing_tables")})
                              if last else "the node does not answer")
        time.sleep(interval)


def launch(host: Host) -> None:
    """Start the node and return at once: after a full outage a node may wait for its peers'
    tables for as long as they are down, so the caller watches the cluster instead. A unit
    already starting (a host that booted) is left to go on."""
    host.script(render("launch"), what="starting ejabberd", timeout=60)


def node_call(host: Host, node_name: str, function: str, timeout: float = 120) -> dict:
    """Call easy_cluster:FUNCTION() inside the node from a hidden Erlang node, as ejabberdctl
    does (same user, cookie file and ERL_OPTIONS): it works while ejabberd itself is still
    starting, when no ejabberdctl command does."""
    flag = "-name" if "." in node_name.split("@", 1)[1] else "-sname"
    expr = (f"R = rpc:call('{node_name}', easy_cluster, {function}, [], {int(timeout * 1000)}), "
            "io:format(\"~s~n\", [case R of {badrpc, W} -> io_lib:format(\"{\\\"ok\\\": false, "
            "\\\"reason\\\": \\\"~0p\\\"}\", [W]); _ -> R end]), halt().")
    r = host.script(render("node_call", name_flag=flag, expr=expr), check=False, timeout=timeout + 30,
                    what=f"calling easy_cluster:{function} on {node_name}")
    return answer_of(host, r, f"easy_cluster:{function} failed")


def ctl(host: Host, command: str, *args: str, what: str) -> Result:
    """Run `ejabberdctl COMMAND ARGS` inside the node (lib.sh's ec_ctl: no VM of its own where
    it can); RemoteError "WHAT failed" if it fails."""
    return host.script(render("ctl", command=command, args=list(args), no_timeout=False), what=what)


def ctl_json(host: Host, command: str, *args: str, what: str, timeout: float | None = 120,
             or_none: bool = False) -> dict | None:
    """Run `ejabberdctl COMMAND ARGS` (a plugin command: it answers one line of JSON) and return
    its answer: the one way easycluster asks a node through ejabberdctl. RemoteError "WHAT
    failed" if the command failed or answered ok: false. With a `timeout` (seconds) ejabberdctl
    runs without its own time limit (--no-timeout) and this one applies; with None, its own.
    `or_none`, for a command whose answer carries no "ok" (easy_cluster_status): None if the
    command failed (the node is down or still starting); only an answer that is no JSON is an error."""
    r = host.script(render("ctl", command=command, args=list(args), no_timeout=timeout is not None), check=False,
                    timeout=timeout, what=what)
    if not or_none:
        return answer_of(host, r, f"{what} failed")
    if not r.ok:
        return None
    answer = last_json(r.stdout)
    if not answer:
        raise RemoteError(host.name, f"{command} answered no JSON", r.stdout.strip()[:200])
    return answer


def answer_of(host: Host, r: Result, failed: str) -> dict:
    """The JSON a plugin command answered (its last line that is a JSON object), if it ran and
    said ok; else RemoteError `failed`, with the plugin's reason or, short of one, the output."""
    answer = last_json(r.stdout)
    if r.ok and answer.get("ok"):
        return answer
    raise RemoteError(host.name, failed, str(answer.get("reason") or answer.get("failed")
                                             or (r.stdout + r.stderr).strip()[-300:] or f"exit {r.rc}"))


def set_master(host: Host, nodes: list[str]) -> None:
    """Make this node load its tables from `nodes` at its next start ([] clears it)."""
    ctl_json(host, "easy_cluster_set_master", ",".join(nodes) if nodes else "none", what="setting master nodes")


def offline_export(host: Host) -> int:
    """Write the offline messages this node stored since it lost a peer to HEAL_CARRY."""
    return ctl_json(host, "easy_cluster_offline_export", HEAL_CARRY, what="saving its side's offline messages")["messages"]


def offline_import(host: Host) -> int:
    """Store those of HEAL_CARRY's messages that are not there yet; the file goes."""
    n = ctl_json(host, "easy_cluster_offline_import", HEAL_CARRY, what="storing its side's offline messages")["imported"]
    remove(host, HEAL_CARRY, what="removing the carried messages' file")
    return n


def partition_clear(host: Host) -> None:
    """Forget the partitions Mnesia reported on this node (once healed)."""
    ctl(host, "easy_cluster_partition_clear", what="clearing the partition record")


def restore(host: Host, path: str) -> dict:
    """Refill every disc table, on every replica, from the backup at `path` on this host."""
    return ctl_json(host, "easy_cluster_restore", path, what=f"restore of {path}", timeout=3600)


def remove(host: Host, *files: str, recursive: bool = False, what: str | None = None, check: bool = True,
           timeout: float | None = None) -> Result:
    """rm -f FILES on the host (`recursive`: rm -rf)."""
    return host.script(render("remove", files=list(files), recursive=recursive),
                       what=what or f"removing {', '.join(files)}", check=check, timeout=timeout)
