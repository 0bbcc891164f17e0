"""Real XMPP clients (slixmpp): register, log in, send, receive; for `fab smoke` and the tests.

Each helper runs its own event loop with a hard timeout, so a broken cluster
fails quickly instead of hanging.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import ssl
import time

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.util.sasl.mechanisms import SCRAM

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


def _scram_hi(self, text, salt: bytes, iterations: int) -> bytes:
    """SCRAM's Hi() is PBKDF2 (RFC 5802): hashlib's, in C, instead of slixmpp's loop of 4096
    HMACs in Python (~40 ms of CPU a login: 500 clients reconnecting took the CPU for seconds)."""
    return hashlib.pbkdf2_hmac(self.hash_name.replace("-", "").lower(), bytes(text), salt, iterations)


SCRAM.Hi = _scram_hi
_scram_first = SCRAM.process_1


def _scram_process_1(self, challenge: bytes) -> bytes:
    """Without TLS there is no channel to bind to: say so ("n", RFC 5802 section 6) rather than
    slixmpp's "y" (binding supported, the server thought not to offer it), which ejabberd 24.12
    refuses as a downgrade ("Invalid channel binding"). Over TLS, slixmpp's choice stands."""
    first = _scram_first(self, challenge)
    if first.startswith(b"y,") and not self.security_settings["encrypted"]:
        first = b"n," + first[2:]
        self.gs2_header = b"n," + self.gs2_header[2:]
        self.client_first_message = first
    return first


SCRAM.process_1 = _scram_process_1


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One for every client: slixmpp makes one per client otherwise, and loading the system's
    CA certificates costs ~17 ms of CPU each time (most of a login's cost)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = True, ssl.CERT_REQUIRED
    return context
TIMEOUT = 20


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str, register: bool = False, tls: bool = False,
                 stream_management: bool = False):
        super().__init__(jid, password, ssl_context=_ssl_context())
        if stream_management:
            # XEP-0198 as mobile clients use it: the server acknowledges stanzas, and what it
            # never acknowledged is the client's to send again. No resumption: a new session
            # after every disconnection. Acks are asked with request_ack() after a stanza:
            # slixmpp's own "every N stanzas" writes the <r/> ahead of the Nth stanza (it
            # bypasses the send queue), so the last stanza would never be acknowledged.
            self.register_plugin("xep_0198", {"window": 2 ** 31, "allow_resume": False})
        # STARTTLS where the cluster has certificates (cluster.certfiles); the lab has none: plain c2s...
        self.enable_direct_tls, self.enable_starttls, self.enable_plaintext = False, tls, not tls
        if not tls:
            # ...and slixmpp refuses to authenticate over plaintext unless told to.
            mechanisms = self.plugin["feature_mechanisms"]
            mechanisms.unencrypted_scram = mechanisms.unencrypted_plain = True
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.ready: asyncio.Future = asyncio.get_event_loop().create_future()
        self.registration: asyncio.Future = asyncio.get_event_loop().create_future()
        self.registering = register
        self.add_event_handler("session_start", self._session_start)
        self.add_event_handler("presence_available", self._presence)
        self.add_event_handler("failed_auth", lambda _e: self._fail("authentication failed"))
        self.add_event_handler("failed_all_auth", lambda _e: self._fail("no usable authentication"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))
        # A stream the server closes before the session is a refusal too, not something to wait
        # out while slixmpp reconnects: ejabberd 24.12 closes it when the login's ban check
        # cannot read the database (its c2s process crashes on {error, db_failure}).
        self.add_event_handler("disconnected", lambda _e: self._fail("the server closed the stream before the session"))
        self.add_event_handler("message", self._message)
        if register:
            self.register_plugin("xep_0077")
            self.plugin["xep_0077"].force_registration = True
            self.add_event_handler("register", self._register)

    def request_ack(self) -> None:
        """Ask the server (stream management) to acknowledge what was sent before this."""
        from slixmpp.plugins.xep_0198.stanza import RequestAck
        self.send(RequestAck(self))

    def _fail(self, why: str) -> None:
        # only the future the caller awaits: an unawaited failed future makes asyncio complain
        fut = self.registration if self.registering else self.ready
        if not fut.done():
            fut.set_exception(AssertionError(why))

    async def _session_start(self, _event) -> None:
        self.send_presence()

    def _presence(self, pres) -> None:
        # Ready once the server has handled our initial presence: it echoes it to the user's
        # own available resources, this one included (RFC 6121 4.2.2). A session with no
        # presence yet is not available: a chat message to the bare JID goes to offline
        # storage instead (seen: `fab smoke` reporting "NOT delivered" for a node that was fine).
        if pres["from"] == self.boundjid and not self.ready.done():
            self.ready.set_result(True)

    async def _register(self, _form) -> None:
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send()
            self.registration.set_result(True)
        except (IqError, IqTimeout) as exc:
            self._fail(f"registration refused: {exc}")

    def _message(self, msg) -> None:
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.inbox.put_nowait((str(msg["from"].bare), msg["body"], time.monotonic()))


async def connect(client: Client, address: str, port: int) -> None:
    """Connect and wait for the session; on failure stop trying. slixmpp keeps retrying a
    failed connection in the background: left alone, a client given up on logs in later as
    a stray session that takes messages nobody reads (seen: "lost" messages in a rolling
    restart, delivered to such a session)."""
    client.connect(address, port)
    try:
        await asyncio.wait_for(client.ready, TIMEOUT)
    except BaseException:
        client.cancel_connection_attempt()
        client.abort()
        raise


def register(address: str, jid: str, password: str, port: int = 5222) -> None:
    """In-band registration (XEP-0077) through the node at `address`."""
    async def run():
        client = Client(jid, password, register=True)
        try:
            client.connect(address, port)
            await asyncio.wait_for(client.registration, TIMEOUT)
        finally:
            client.disconnect()
    asyncio.run(run())


def can_login(address: str, jid: str, password: str, port: int = 5222) -> bool:
    async def run():
        client = Client(jid, password)
        try:
            await connect(client, address, port)
            return True
        except AssertionError:
            return False
        finally:
            client.disconnect()
    return asyncio.run(run())


def send_and_receive(sender: tuple[str, str, str], receiver: tuple[str, str, str], body: str,
                     port: int = 5222) -> float:
    """Log `receiver` (address, jid, password) in, then `sender`; send `body`;
    return the delivery latency in seconds (AssertionError if it never arrives)."""
    async def run():
        rx = Client(receiver[1], receiver[2])
        tx = Client(sender[1], sender[2])
        try:
            await connect(rx, receiver[0], port)
            await connect(tx, sender[0], port)
            sent = time.monotonic()
            tx.send_message(mto=receiver[1], mbody=body, mtype="chat")
            while True:
                frm, text, at = await asyncio.wait_for(rx.inbox.get(), TIMEOUT)
                if frm == sender[1].split("/")[0] and text == body:
                    return at - sent
        finally:
            tx.disconnect()
            rx.disconnect()
    return asyncio.run(run())
