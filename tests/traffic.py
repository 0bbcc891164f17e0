"""Messages flowing through a cluster while it is being changed: one real client per node, each
sending to the client on the next node every INTERVAL seconds, reconnecting to its own node
whenever that node goes away. Runs in a thread of its own until stopped; bounded in time.

Not load/run.py's Probe, on purpose (both are built on easycluster.xmpp's Client and connect,
which is what they share). This one serves a test's claim about one node at a time: each
client stays on its own node (a test counts its sessions: one cut per restart of that node),
plain clients without stream management, and a message counts only if its sender's session
stayed up `margin` seconds past the send (a message written on a dying connection was never
the cluster's). Probe serves `make load`'s claim about every message: hundreds of clients with
stream management that move between nodes as a load balancer would, resend what the server
never acknowledged, write to users that are offline, and are counted per operation (lost,
duplicates, time without service), inside load's own event loop. One helper for both would
carry both sets of rules behind switches; and load/ is a script, not a package the tests can
import (nor the other way round).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from easycluster.xmpp import Client, connect

INTERVAL = 0.25
MAX_SECONDS = 600       # a forgotten Traffic stops by itself


@dataclass
class Sent:
    sender: str
    receiver: str
    body: str
    at: float


@dataclass
class Endpoint:
    jid: str
    address: str
    client: Client | None = None
    sessions: list[list[float]] = field(default_factory=list)   # [start, end or inf] of each session

    def up_during(self, start: float, end: float) -> bool:
        return any(s <= start and end <= e for s, e in self.sessions)


class Traffic:
    def __init__(self, endpoints: list[tuple[str, str]], password: str, port: int = 5222,
                 interval: float = INTERVAL):
        """endpoints: (address, jid) of each node's client, in ring order; each sends one
        message every `interval` seconds."""
        self.endpoints = [Endpoint(jid, address) for address, jid in endpoints]
        self.password, self.port, self.interval = password, port, interval
        self.sent: list[Sent] = []
        self.received: dict[str, float] = {}      # body -> when
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not all(e.sessions for e in self.endpoints):
            assert time.monotonic() < deadline, "not every client could log in"
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def settle(self, seconds: float = 5) -> None:
        """Let messages in flight (and offline messages of reconnected clients) arrive."""
        time.sleep(seconds)

    async def _main(self) -> None:
        tasks = [asyncio.create_task(self._keep_connected(e)) for e in self.endpoints]
        tasks.append(asyncio.create_task(self._send_loop()))
        deadline = time.monotonic() + MAX_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()
        for e in self.endpoints:
            if e.client:
                e.client.disconnect()
        await asyncio.sleep(0.2)

    async def _keep_connected(self, e: Endpoint) -> None:
        while True:
            client = Client(e.jid, self.password)
            lost = asyncio.get_running_loop().create_future()
            client.add_event_handler("disconnected", lambda _ev, f=lost: f.done() or f.set_result(True))
            try:
                await connect(client, e.address, self.port)
            except (AssertionError, asyncio.TimeoutError, OSError):
                client.disconnect()
                await asyncio.sleep(1)
                continue
            e.client = client
            e.sessions.append([time.monotonic(), float("inf")])
            reader = asyncio.create_task(self._read(client))
            await lost
            e.sessions[-1][1] = time.monotonic()
            e.client = None
            reader.cancel()
            await asyncio.sleep(0.5)

    async def _read(self, client: Client) -> None:
        while True:
            _frm, body, at = await client.inbox.get()
            self.received.setdefault(body, at)

    async def _send_loop(self) -> None:
        seq = 0
        while True:
            for i, e in enumerate(self.endpoints):
                to = self.endpoints[(i + 1) % len(self.endpoints)]
                if e.client is not None:
                    seq += 1
                    body = f"traffic {seq} {e.jid} -> {to.jid}"
                    e.client.send_message(mto=to.jid, mbody=body, mtype="chat")
                    self.sent.append(Sent(e.jid, to.jid, body, time.monotonic()))
            await asyncio.sleep(self.interval)

    def accounting(self, margin: float = 1.0) -> tuple[list[Sent], list[Sent]]:
        """(checked, lost): messages whose sender and receiver kept their sessions from the send
        until `margin` seconds after it (a message written as a node goes down is in flight on a
        dying connection, not sent to a node that is up), and those of them never delivered."""
        by_jid = {e.jid: e for e in self.endpoints}
        checked = [m for m in self.sent
                   if by_jid[m.sender].up_during(m.at, m.at + margin)]
        lost = [m for m in checked if m.body not in self.received]
        return checked, lost
