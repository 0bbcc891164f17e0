"""No message lost around sessions that start or end while other nodes route to them: each
root cause found with `make load` (docs/reliability.md), played here directly so that the test
fails without its fix every time, not once in a while. Runs after test_failover on the same lab.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import yaml

from easycluster import xmpp
from conftest import fab, node_eval, ssh

PASSWORD = "delivery-pw"
SENDER, RECEIVER = "dl-a", "dl-b"


@pytest.fixture(scope="module")
def cluster(lab):
    fab("deploy", timeout=600)
    hosts = [n["host"] for n in yaml.safe_load(lab.inventory.read_text())["nodes"]]
    d = f"{lab.name}.test"
    ssh(lab, hosts[0], f"ejabberdctl register {SENDER} {d} {PASSWORD}; ejabberdctl register {RECEIVER} {d} {PASSWORD}")
    return hosts, d


def wait_healthy(bound: float = 120) -> None:
    deadline = time.monotonic() + bound
    while fab("status", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the cluster is not healthy again"
        time.sleep(1)


def offline_count(lab, host: str, d: str) -> int:
    return int(ssh(lab, host, f"ejabberdctl get_offline_count {RECEIVER} {d}").stdout.strip())


async def next_body(client: xmpp.Client, body: str, bound: float) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            _frm, text, _at = await asyncio.wait_for(client.inbox.get(), deadline - time.monotonic())
        except asyncio.TimeoutError:
            return False
        if text == body:
            return True
    return False


def test_a_message_stored_offline_for_a_user_now_online_is_delivered_at_once(cluster, lab):
    """The race of a restart: the receiver logs in again on its restarted node, and its initial
    presence fetches its offline messages; a node that had not yet seen the new session stores
    one more offline just after. Without a second fetch it waits for the user's next login
    (seen in `make load`: acknowledged, never delivered). Played directly: lab1 hands a message
    to offline storage, as ejabberd does when it finds no available session, while the receiver
    is online on lab2."""
    hosts, d = cluster
    body = f"stored too late {time.time()}"
    stanza = (f"<message xmlns='jabber:client' from='{SENDER}@{d}/t' to='{RECEIVER}@{d}' type='chat'>"
              f"<body>{body}</body></message>")
    store = (f"Msg = xmpp:decode(fxml_stream:parse_element(<<\"{stanza}\">>)), "
             f"element(1, ejabberd_hooks:run_fold(offline_message_hook, <<\"{d}\">>, {{bounce, Msg}}, []))")

    async def run() -> bool:
        rx = xmpp.Client(f"{RECEIVER}@{d}", PASSWORD)
        await xmpp.connect(rx, lab.ip(hosts[1]), 5222)
        try:
            assert await asyncio.to_thread(node_eval, lab, hosts[0], store) == "offlined"
            return await next_body(rx, body, 10)
        finally:
            rx.disconnect()

    assert asyncio.run(run()), "the message stayed in offline storage while its user was online"
    assert offline_count(lab, hosts[0], d) == 0


def test_a_drained_session_leaves_every_nodes_routing_before_its_stream_ends(cluster, lab):
    """The drain used to end each stream (ejabberd_c2s:close) while the session was still in the
    routing table: what other nodes routed to it in between was written to a closed socket
    (seen in `make load` and in the rolling-restart test: one message now and then). Now the
    session leaves every node's table first, and its stream ends a grace period later."""
    hosts, d = cluster
    gone_at: list[str] = []
    watch = (f"W = fun Loop(N) -> case ejabberd_sm:get_user_resources(<<\"{RECEIVER}\">>, <<\"{d}\">>) of "
             "[] when N =:= 0 -> absent_at_start; "
             "[] -> os:system_time(millisecond); "
             "_ when N > 1500 -> still_there; "
             "_ -> timer:sleep(10), Loop(N + 1) end end, W(0)")

    async def run() -> float:
        rx = xmpp.Client(f"{RECEIVER}@{d}", PASSWORD)
        ended = asyncio.get_running_loop().create_future()
        rx.add_event_handler("disconnected", lambda _e: ended.done() or ended.set_result(time.time()))
        await xmpp.connect(rx, lab.ip(hosts[1]), 5222)
        watcher = threading.Thread(target=lambda: gone_at.append(node_eval(lab, hosts[0], watch)))
        watcher.start()
        await asyncio.sleep(2)            # the watcher's VM is up and has seen the session
        drain = asyncio.create_task(asyncio.to_thread(ssh, lab, hosts[1], "ejabberdctl easy_cluster_drain 5"))
        stream_end = await asyncio.wait_for(ended, 20)
        await drain
        await asyncio.to_thread(watcher.join, 30)
        return stream_end

    try:
        stream_end = asyncio.run(run())
    finally:       # the drained node takes no clients until it starts again
        ssh(lab, hosts[1], "systemctl restart ejabberd")
        wait_healthy()
    assert gone_at and gone_at[0].isdigit(), gone_at
    left_routing = int(gone_at[0]) / 1000
    assert left_routing < stream_end - 0.5, (
        f"the session left lab1's routing {left_routing - stream_end:+.2f}s after its stream ended")


def test_an_offline_message_is_stored_under_the_users_lock(cluster, lab):
    """ejabberd stores an offline message with a dirty write, which ignores the lock under which
    a user logging in on another node reads and deletes its messages: the delete could remove a
    message it never read (seen in `make load`: stored, then in no node's storage). Stored in a
    transaction (mod_offline_easy), the store waits for that lock. Played directly: lab1 holds
    the user's lock; lab2 stores a message meanwhile; it may not be there before the release."""
    hosts, d = cluster
    stanza = (f"<message xmlns='jabber:client' from='{SENDER}@{d}/t' to='{RECEIVER}@{d}' type='chat'>"
              f"<body>under the lock</body></message>")
    play = (f"US = {{<<\"{RECEIVER}\">>, <<\"{d}\">>}}, Self = self(), "
            "Count = fun() -> length(mnesia:dirty_read(offline_msg, US)) end, N0 = Count(), "
            f"Holder = spawn('ejabberd@{hosts[0]}', fun() -> mnesia:transaction(fun() -> "
            "mnesia:lock({record, offline_msg, US}, write), Self ! locked, "
            "receive release -> ok after 20000 -> ok end end) end), "
            "receive locked -> ok after 10000 -> exit(no_lock) end, "
            f"Msg = xmpp:decode(fxml_stream:parse_element(<<\"{stanza}\">>)), "
            f"spawn(fun() -> R = ejabberd_hooks:run_fold(offline_message_hook, <<\"{d}\">>, {{bounce, Msg}}, []), "
            "Self ! {stored, element(1, R)} end), "
            "timer:sleep(1500), Held = Count() - N0, Holder ! release, "
            "Stored = receive {stored, S} -> S after 20000 -> timeout end, "
            "{Held, Stored, Count() - N0}")
    assert node_eval(lab, hosts[1], play) == "{0,offlined,1}"


def test_a_message_beyond_the_offline_limit_bounces_to_its_sender_with_its_reason(cluster, lab):
    """cluster.offline_limit (the lab's: the default, 1000): a user offline holds that many
    messages; the next one goes back to its sender as an error saying why, and the user gets
    every message kept at the next login. Storage is filled inside the node (offline_message_hook,
    as ejabberd does for a message with no session to go to: the client's shaper would take a
    minute); the last message is a real client's."""
    from easycluster.inventory import OFFLINE_LIMIT
    hosts, d = cluster
    full = "dl-full"
    ssh(lab, hosts[0], f"ejabberdctl register {full} {d} {PASSWORD}")
    stanza = (f"<message xmlns='jabber:client' from='{SENDER}@{d}/t' to='{full}@{d}' type='chat'>"
              f"<body>kept</body></message>")
    fill = (f"Msg = xmpp:decode(fxml_stream:parse_element(<<\"{stanza}\">>)), "
            f"length([ok || _ <- lists:seq(1, {OFFLINE_LIMIT}), element(1, ejabberd_hooks:run_fold("
            f"offline_message_hook, <<\"{d}\">>, {{bounce, Msg}}, [])) == offlined])")
    assert node_eval(lab, hosts[0], fill, timeout=120) == str(OFFLINE_LIMIT)
    assert int(ssh(lab, hosts[1], f"ejabberdctl get_offline_count {full} {d}").stdout) == OFFLINE_LIMIT

    async def bounce() -> tuple[str, str, str]:
        tx = xmpp.Client(f"{SENDER}@{d}", PASSWORD)
        errors: asyncio.Queue = asyncio.Queue()
        tx.add_event_handler("message_error", lambda m: errors.put_nowait(
            (m["body"], m["error"]["condition"], m["error"]["text"])))
        await xmpp.connect(tx, lab.ip(hosts[1]), 5222)
        try:
            tx.send_message(mto=f"{full}@{d}", mbody="one too many", mtype="chat")
            return await asyncio.wait_for(errors.get(), 20)
        finally:
            tx.disconnect()

    body, condition, text = asyncio.run(bounce())
    assert (body, condition) == ("one too many", "resource-constraint") and "offline message queue is full" in text, \
        (body, condition, text)
    assert int(ssh(lab, hosts[0], f"ejabberdctl get_offline_count {full} {d}").stdout) == OFFLINE_LIMIT

    async def receive() -> int:
        rx = xmpp.Client(f"{full}@{d}", PASSWORD)
        await xmpp.connect(rx, lab.ip(hosts[2]), 5222)
        got, deadline = 0, time.monotonic() + 60
        try:
            while got < OFFLINE_LIMIT and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(rx.inbox.get(), 5)
                    got += 1
                except asyncio.TimeoutError:
                    pass
            return got
        finally:
            rx.disconnect()

    assert asyncio.run(receive()) == OFFLINE_LIMIT
    assert int(ssh(lab, hosts[0], f"ejabberdctl get_offline_count {full} {d}").stdout) == 0
