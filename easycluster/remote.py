"""SSH to the cluster's hosts: one connection per host per run, reused by every step.

Host keys are checked against the known_hosts file the ssh_config names (Fabric
alone would accept any key); with `StrictHostKeyChecking yes` an unknown key is
refused. Secrets travel only as file contents over SFTP, never on a command line; what
a host is told to do goes as a script on stdin (easycluster.scripts renders it, with its
parameters inside).
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote
from invoke.exceptions import CommandTimedOut

from .errors import RemoteError, RemoteOverdue
from .inventory import Inventory, Node

T = TypeVar("T")
CONNECT_TIMEOUT = 10   # seconds: a dead host is reported, not waited for


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class _ChunkedStdinRemote(Remote):
    """invoke feeds a non-tty stdin one byte per 10 ms loop (a 3 KB script took 30 s);
    a script held in memory goes in large chunks instead."""

    def read_our_stdin(self, input_):
        if isinstance(input_, io.StringIO):
            return input_.read(65536)
        return super().read_our_stdin(input_)


class Host:
    """One SSH connection to one host, opened on first use."""

    def __init__(self, inventory: Inventory, node: Node):
        self.node = node
        self.name = node.host
        config = Config(runtime_ssh_path=str(inventory.ssh_config) if inventory.ssh_config else None,
                        overrides={"runners": {"remote": _ChunkedStdinRemote}})
        self._conn = Connection(node.host, user=inventory.ssh_user, config=config,
                                connect_timeout=CONNECT_TIMEOUT)
        self._opened = False
        self._cut_off = False
        self._opening = threading.Lock()   # two threads of one run (facts, the database) share it
        self.connections = 0

    @property
    def address(self) -> str:
        """Where this host is reached (ssh_config's HostName, else the inventory's host)."""
        return self._conn.host

    def _connection(self) -> Connection:
        with self._opening:
            return self._open()

    def _open(self) -> Connection:
        if not self._opened:
            client = self._conn.client
            known = self._conn.ssh_config.get("userknownhostsfile", "~/.ssh/known_hosts")
            for path in str(known).split():
                path = os.path.expanduser(path)
                if os.path.exists(path):
                    client.load_host_keys(path)
            if str(self._conn.ssh_config.get("stricthostkeychecking", "ask")).lower() in ("yes", "ask"):
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                self._conn.open()
            except paramiko.SSHException as exc:
                raise RemoteError(self.name, "SSH refused", str(exc)) from None
            except OSError as exc:
                raise RemoteError(self.name, "unreachable over SSH", exc.strerror or str(exc)) from None
            self._opened = True
            self.connections += 1
        return self._conn

    def transport(self) -> paramiko.Transport:
        """This host's SSH transport: channels to what the host reaches (direct-tcpip) ride on
        the one connection."""
        return self._connection().client.get_transport()

    def run(self, command: str, *, check: bool = True, timeout: float | None = None,
            stdin: str | None = None, what: str | None = None) -> Result:
        if self._cut_off:
            raise RemoteError(self.name, what or "remote command failed", "the host stopped answering earlier")
        conn = self._connection()
        call = lambda: conn.run(command, hide=True, warn=True, timeout=timeout,  # noqa: E731
                                in_stream=io.StringIO(stdin) if stdin is not None else False)
        try:
            r = call() if timeout is None else self._within(call, timeout + 5)
        except CommandTimedOut:
            raise RemoteError(self.name, what or "remote command failed",
                              f"no answer within {timeout:.0f}s (host cut off or hung)") from None
        except Exception as exc:  # paramiko and socket errors
            raise RemoteError(self.name, what or "remote command failed",
                              f"{type(exc).__name__}: {str(exc)[-300:]}") from None
        result = Result(r.exited, r.stdout, r.stderr)
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            if any(line.startswith("--- ") for line in detail):
                # a node's own account (unit state, journal, error.log: nodectl's ec_log_tail): whole
                detail = ["", *detail[-40:]]
                text = "\n    ".join(detail)
            else:
                text = " | ".join(detail[-3:])
            raise RemoteError(self.name, what or f"`{command.splitlines()[0][:60]}` failed",
                              text if detail else f"exit {result.rc}")
        return result

    def _within(self, call: Callable[[], T], seconds: float) -> T:
        """invoke's timeout cannot end a command on a link that went dead (opening the
        channel alone may wait an hour): wait in a daemon thread, give up on the host."""
        box: dict = {}

        def target():
            try:
                box["result"] = call()
            except BaseException as exc:   # handed to the caller below
                box["error"] = exc
        worker = threading.Thread(target=target, daemon=True)
        worker.start()
        worker.join(seconds)
        if worker.is_alive():
            self._cut_off = True
            raise CommandTimedOut(None, seconds)
        if "error" in box:
            raise box["error"]
        return box["result"]

    def script(self, body: str, **kwargs) -> Result:
        """Run a bash script sent on stdin (easycluster.scripts.render's). It is read whole
        before it runs, so a command in it that reads stdin (ejabberdctl, erl) cannot swallow
        the rest."""
        return self.run("bash -c 'eval \"$(cat)\"'", stdin=body, **kwargs)

    def follow(self, body: str, on_line: Callable[[str], None], *, silence: float, bound: float,
               what: str) -> Result:
        """Run a bash script as `script` does, handing each line it prints to on_line as it comes
        (one request, where polling would make one every interval). A host that prints nothing
        for `silence` seconds is cut off; the script must say something more often (a
        heartbeat) while it waits: RemoteError then; RemoteOverdue after `bound` seconds."""
        if self._cut_off:
            raise RemoteError(self.name, what, "the host stopped answering earlier")
        deadline = time.monotonic() + bound
        try:
            chan = self.transport().open_session(timeout=silence)
            chan.settimeout(silence)
            chan.exec_command("bash -c 'eval \"$(cat)\"'")
            chan.sendall(body.encode())
            chan.shutdown_write()
            out, pending = [], b""
            while data := chan.recv(65536):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    out.append(text)
                    on_line(text)
                if time.monotonic() > deadline:
                    chan.close()
                    raise RemoteOverdue(self.name, what, f"not done within {bound:.0f}s")
            rc = chan.recv_exit_status()
            err = b""
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            chan.close()
        except RemoteError:
            raise
        except socket.timeout:
            self._cut_off = True
            raise RemoteError(self.name, what, f"no answer within {silence:.0f}s (host cut off or hung)") from None
        except Exception as exc:  # paramiko and socket errors
            raise RemoteError(self.name, what, f"{type(exc).__name__}: {str(exc)[-300:]}") from None
        if pending:
            out.append(pending.decode(errors="replace"))
            on_line(out[-1])
        return Result(rc, "\n".join(out) + ("\n" if out else ""), err.decode(errors="replace"))

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        """Write `data` to `remote_path` over SFTP (mode 0600 from creation on)."""
        try:
            sftp = self._connection().sftp()
            with sftp.open(remote_path, "wb") as fh:
                fh.chmod(0o600)
                fh.write(data)
        except RemoteError:
            raise
        except Exception as exc:   # paramiko/socket errors: a host problem, not a traceback
            raise RemoteError(self.name, f"uploading {remote_path} failed",
                              f"{type(exc).__name__}: {exc}") from None

    def reconnect(self) -> None:
        """Forget this host's connection (its host rebooted): the next command opens a new one."""
        with self._opening:
            if self._opened:
                try:
                    self._conn.close()
                except Exception:   # a connection the reboot already cut
                    pass
            self._opened = False
            self._cut_off = False

    def close(self) -> None:
        if self._opened and not self._cut_off:
            self._conn.close()
            self._opened = False


def at_once(hosts: list[Host], func: Callable[[Host], T]) -> dict[str, T | Exception]:
    """Run func on each of `hosts` at once (a fleet's nodes, or its database hosts): its result
    or its exception per host name, none raised."""
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        futures = {h.name: pool.submit(func, h) for h in hosts}
    out: dict[str, T | Exception] = {}
    for name, f in futures.items():
        exc = f.exception()
        out[name] = exc if exc is not None else f.result()
    return out


def each_at_once(hosts: list[Host], func: Callable[[Host], T]) -> dict[str, T]:
    """Run func on each of `hosts` at once; after all finish, raise the first failure (in the
    order given), else return every result."""
    results = at_once(hosts, func)
    for h in hosts:
        if isinstance(results[h.name], Exception):
            raise results[h.name]
    return results   # type: ignore[return-value]


class Fleet:
    """The hosts of an inventory, with parallel fan-out (one thread per host)."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        self.hosts = {n.host: Host(inventory, n) for n in inventory.nodes}
        self._print_lock = threading.Lock()
        self._database: list[Host] = []    # the database host's connection, once opened
        self._monitoring: list[Host] = []  # the monitoring host's, once opened

    def database_hosts(self) -> list[Host]:
        """The hosts easycluster provisions PostgreSQL on (cluster.database.host, or .hosts): not nodes."""
        db = self.inventory.cluster.database
        assert db is not None and db.hosts
        if not self._database:
            self._database.extend(Host(self.inventory, Node(host=h, name=f"postgresql@{h}", dist_interface=None,
                                                            role="database")) for h in db.hosts)
        return list(self._database)

    def monitoring_host(self) -> Host:
        """The host of Prometheus and Alertmanager (cluster.monitoring.host): not a node."""
        mon = self.inventory.cluster.monitoring
        assert mon is not None
        if not self._monitoring:
            self._monitoring.append(Host(self.inventory, Node(host=mon.host, name=f"prometheus@{mon.host}",
                                                              dist_interface=None, role="monitoring")))
        return self._monitoring[0]

    def database_member(self, name: str) -> Host:
        """A database host (cluster.database.hosts) by its name."""
        return next(h for h in self.database_hosts() if h.name == name)

    def database_host(self) -> Host:
        """The host easycluster provisions PostgreSQL on (cluster.database.host): not a node."""
        db = self.inventory.cluster.database
        assert db is not None and db.managed_host is not None
        return self.database_hosts()[0]

    def subset(self, inventory: Inventory) -> "Fleet":
        """The same connections, for an inventory holding some of these nodes."""
        sub = Fleet.__new__(Fleet)
        sub.inventory, sub._print_lock, sub._database = inventory, self._print_lock, self._database
        sub._monitoring = self._monitoring
        sub.hosts = {n.host: self.hosts[n.host] for n in inventory.nodes}
        return sub

    def __getitem__(self, host: str) -> Host:
        return self.hosts[host]

    def parallel(self, func: Callable[[Host], T], hosts: list[str] | None = None) -> dict[str, T | Exception]:
        """Run func on each host at once; exceptions are returned per host, not raised."""
        names = hosts if hosts is not None else list(self.hosts)
        return at_once([self.hosts[h] for h in names], func)

    def each(self, hosts: list[str], func: Callable[[Host], object]) -> None:
        """Run func on these hosts at once; after all finish, raise the first failure."""
        each_at_once([self.hosts[h] for h in hosts], func)

    def connections_opened(self) -> dict[str, int]:
        return {h: host.connections for h, host in [*self.hosts.items(), *((d.name, d) for d in self._others())]}

    def _others(self) -> list[Host]:
        return [*self._database, *self._monitoring]

    def close(self) -> None:
        for host in [*self.hosts.values(), *self._others()]:
            host.close()

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Background:
    """A function run in a thread alongside other work; result() waits and raises its error."""

    def __init__(self, func):
        self._box: dict = {}
        self._thread = threading.Thread(target=self._run, args=(func,), daemon=True)
        self._thread.start()

    def _run(self, func) -> None:
        try:
            self._box["value"] = func()
        except BaseException as exc:   # raised again in result()
            self._box["error"] = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self):
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box.get("value")
