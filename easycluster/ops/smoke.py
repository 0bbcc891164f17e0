"""`fab smoke`: real XMPP clients log into every node and message across every pair of nodes.

Throwaway users (one per node) are registered for the run and unregistered afterwards,
whatever happens. A pass proves more than `fab status`: logins, routing between nodes and
delivery work end to end.

Their password is a secret like any other: it never appears on a command line on a host
(`ps` shows those to every user there), nor inside a script. It goes as a file's contents over
SFTP, is handed to the ejabberd user (0400), and the toolkit's hidden Erlang node
(scripts/node_call.sh, as that user) reads it, deletes it and registers the users inside the
node, as `ejabberdctl register` would (ejabberd_admin:register), which would need it as an
argument.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from .. import xmpp
from ..errors import EasyClusterError, RemoteError
from ..inventory import Inventory, Node
from ..paths import SMOKE_PASSWORD_NODE
from ..operation import operation
from ..progress import Out
from ..remote import Host
from ..scripts import render

DELIVERY_TIMEOUT = 10.0
REGISTER_TIMEOUT = 30          # seconds, a user's registration inside the node at most


@dataclass
class SmokeReport:
    logins: dict[str, tuple[bool, float | None, str]] = field(default_factory=dict)   # node -> ok, seconds, why
    messages: list[tuple[str, str, bool, float | None]] = field(default_factory=list)  # from, to, ok, seconds

    @property
    def passed(self) -> bool:
        return bool(self.logins) and all(ok for ok, _, _ in self.logins.values()) and \
            all(ok for _, _, ok, _ in self.messages)


def smoke(inv: Inventory, *, out: Out = print) -> SmokeReport:
    domain = inv.cluster.domains[0]
    tag = secrets.token_hex(3)
    password = secrets.token_urlsafe(16)
    with operation(inv, "smoke", out=out) as op:
        fleet = op.fleet
        health = op.observe()
        nodes = [inv.node(n.host) for n in health.nodes if n.running]
        if not nodes:
            raise EasyClusterError("no node is running")
        users = {node.name: f"easycluster-smoke-{tag}-{i}" for i, node in enumerate(nodes, 1)}
        admin = fleet[nodes[0].host]
        # the password as a file's contents (SFTP), like every secret: never inside a script,
        # never on a command line (module docstring)
        password_file = f"{SMOKE_PASSWORD_NODE}.{tag}"
        try:
            admin.put_bytes(password.encode(), password_file)
            register(admin, nodes[0].name, list(users.values()), domain, password_file)
            targets = [(node, fleet[node.host].address, f"{users[node.name]}@{domain}") for node in nodes]
            report = asyncio.run(_exchange(targets, password, inv.cluster.c2s_port, bool(inv.cluster.certfiles)))
            for n in health.nodes:   # a node that is down fails the smoke test: nobody can log in there
                if not n.running:
                    report.logins[n.name] = (False, None, "not running" if n.reachable else "unreachable")
        finally:
            admin.script(render("smoke_unregister", users=list(users.values()), domain=domain,
                                password_file=password_file), check=False, what="removing smoke-test users")
    return report


def register(admin: Host, node_name: str, users: list[str], domain: str, password_file: str) -> None:
    """Register `users` on `domain` with the password uploaded to `password_file`: the file is
    handed to the ejabberd user, and a hidden node of that user (node_call.sh) reads it, deletes
    it and registers them inside `node_name`. The command line carries the file's name only."""
    admin.script(render("smoke_stage", password_file=password_file), what="handing the smoke-test password to ejabberd")
    flag = "-name" if "." in node_name.split("@", 1)[1] else "-sname"
    r = admin.script(render("node_call", name_flag=flag, expr=register_expr(node_name, users, domain, password_file)),
                     check=False, timeout=60 + REGISTER_TIMEOUT * len(users), what="registering smoke-test users")
    if not r.ok or r.stdout.strip().splitlines()[-1:] != ["registered"]:
        raise RemoteError(admin.name, "registering smoke-test users failed",
                          (r.stdout + r.stderr).strip()[-300:] or f"exit {r.rc}")


def register_expr(node_name: str, users: list[str], domain: str, password_file: str) -> str:
    """The Erlang that node_call.sh evaluates (on its command line: no secret in it). It prints
    `registered`, or each user not registered with why (never the password)."""
    names = ", ".join(_binary(u) for u in users)
    return (f"F = {_string(password_file)}, "
            "Rs = case file:read_file(F) of "
            "{ok, P} -> _ = file:delete(F), "
            f"[{{U, rpc:call({_atom(node_name)}, ejabberd_admin, register, [U, {_binary(domain)}, P], {REGISTER_TIMEOUT * 1000})}} "
            f"|| U <- [{names}]]; "
            "Error -> _ = file:delete(F), [{password_file, Error}] end, "
            "Bad = [{U, case R of {error, _, _, Msg} -> lists:flatten(Msg); {error, W} -> W; "
            "{badrpc, W} when is_atom(W) -> W; {badrpc, _} -> badrpc; _ -> unexpected end} "
            "|| {U, R} <- Rs, not (is_tuple(R) andalso element(1, R) =:= ok)], "
            "io:format(\"~p~n\", [case Bad of [] -> registered; _ -> Bad end]), halt().")


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _binary(text: str) -> str:
    return f"<<{_string(text)}/utf8>>"


def _atom(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def _exchange(targets: list[tuple[Node, str, str]], password: str, port: int, tls: bool) -> SmokeReport:
    report = SmokeReport()
    clients = {node.name: xmpp.Client(jid, password, tls=tls) for node, _, jid in targets}

    async def login(node: Node, address: str) -> None:
        t0 = time.monotonic()
        try:
            await xmpp.connect(clients[node.name], address, port)
            report.logins[node.name] = (True, time.monotonic() - t0, "")
        except (AssertionError, asyncio.TimeoutError, OSError) as exc:
            report.logins[node.name] = (False, None, str(exc) or type(exc).__name__)

    await asyncio.gather(*(login(node, address) for node, address, _ in targets))
    report.logins = {node.name: report.logins[node.name] for node, _, _ in targets}   # inventory order
    try:
        for sender, _, _ in targets:
            for receiver, _, to_jid in targets:
                if sender is receiver:
                    continue
                if not (report.logins[sender.name][0] and report.logins[receiver.name][0]):
                    report.messages.append((sender.name, receiver.name, False, None))
                    continue
                body = f"smoke {sender.name} -> {receiver.name} {secrets.token_hex(4)}"
                sent = time.monotonic()
                clients[sender.name].send_message(mto=to_jid, mbody=body, mtype="chat")
                latency = await _delivered(clients[receiver.name], body)
                report.messages.append((sender.name, receiver.name, latency is not None,
                                        latency - sent if latency is not None else None))
    finally:
        for client in clients.values():
            client.disconnect()
    return report


async def _delivered(client: xmpp.Client, body: str) -> float | None:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            _frm, text, at = await asyncio.wait_for(client.inbox.get(), left)
        except asyncio.TimeoutError:
            return None
        if text == body:
            return at
    return None


def format_report(report: SmokeReport) -> str:
    lines = ["login:"]
    for name, (ok, secs, why) in report.logins.items():
        lines.append(f"  {name:<28} {'ok' if ok else 'FAILED'}" + (f"  {secs * 1000:6.0f} ms" if ok else f"  {why}"))
    lines.append("messages (from -> to):")
    for frm, to, ok, secs in report.messages:
        lines.append(f"  {frm} -> {to}".ljust(60) + (f"delivered {secs * 1000:6.1f} ms" if ok else "NOT delivered"))
    total = len(report.messages)
    delivered = sum(1 for m in report.messages if m[2])
    lines.append(f"smoke: {'PASS' if report.passed else 'FAIL'} ({len(report.logins)} nodes, "
                 f"{delivered}/{total} messages delivered)")
    return "\n".join(lines)
