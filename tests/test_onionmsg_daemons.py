"""Onion messages end to end between `lightspeed node start` processes on loopback TCP.

Four daemons A-B-C-D with announced channels learn the graph by gossip; the operator's
`lightspeed onion-message send` crosses three hops and gets the pong back over the reply
path, fetches an invoice for D's BOLT 12 offer over the same hops, reaches D over a blinded path D handed out (its peer C introduces it), hostile packets
sent to B by a scripted peer are dropped without ending that connection, and after C
and D restart (their channels reconnect) the messages go through again and the offer D made
before its restart is still answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from lightspeed.codec.generated import OnionMessage as WireOnionMessage
from lightspeed.node.onion_messenger import PING_TYPE, PONG_TYPE
from lightspeed.node.peer import connect as connect_peer
from lightspeed.onion.blinding import EncryptedDataTlv, create_blinded_path
from lightspeed.onion.message import OnionMessagePayload, build_onion_message
from tests.test_daemon import Daemon, call, lightspeed, open_line, started, wait_for

__all__ = ["started"]  # the fixture, used by name


def _ping_with_reply(a: Path, d_id: str, value: bytes) -> dict[str, object] | None:
    """A's `onion-message send D --reply-path`; the reply, or None while the way is not known yet."""
    done = lightspeed(a, "onion-message", "send", d_id, "--tlv", f"{PING_TYPE}={value.hex()}", "--reply-path",
                      "--timeout", "4", check=False)
    if done.returncode != 0:  # no path yet (gossip still on its way), or a peer still reconnecting
        assert done.stderr.startswith("error: "), done.stderr
        return None
    reply: dict[str, object] | None = json.loads(done.stdout)["reply"]
    return reply


async def _hostile(b: Daemon) -> None:
    """A scripted peer sends B garbage, a wrong HMAC and an oversized packet, then a good message."""
    b_id = bytes.fromhex(b.ready["node_id"])
    host, port = b.ready["listen"].rsplit(":", 1)
    peer = await connect_peer(host, int(port), os.urandom(32), b_id)
    path = create_blinded_path(os.urandom(32), [b_id], [EncryptedDataTlv()])
    _, good = build_onion_message(os.urandom(32), path, OnionMessagePayload(records=((PING_TYPE, b"ok"),)))
    packet = good.onion_message_packet
    for bad in (bytes([0]) + os.urandom(len(packet) - 1), packet[:-1] + bytes([packet[-1] ^ 1]),
                packet + bytes(40_000 - len(packet))):
        await peer.send(WireOnionMessage(good.path_key, bad))
    await peer.send(WireOnionMessage(good.path_key, packet))
    stats = await asyncio.to_thread(lambda: call(b.datadir, "onion-message", "stats"))
    deadline = time.monotonic() + 20
    while stats["received"] < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        stats = await asyncio.to_thread(lambda: call(b.datadir, "onion-message", "stats"))
    assert stats["dropped_by_reason"] == {"invalid": 2, "oversized": 1}, stats
    assert stats["received"] == 1 and not peer.session.closed  # dropped, never disconnected
    await peer.close()


@pytest.mark.slow
def test_four_daemons_relay_reply_follow_blinded_paths_drop_garbage_and_survive_a_restart(
        tmp_path: Path, started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    for name in ("a", "b", "c", "d"):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", "--announce-channels"))
    a, b, c, d = (daemon.datadir for daemon in started)
    ids = [daemon.ready["node_id"] for daemon in started]
    open_line(started, chain, "2000000", "1000000")

    replies: list[dict[str, object]] = []

    def answered_with(value: bytes) -> bool:  # A learns C and D by gossip (their features); until then: no path
        reply = _ping_with_reply(a, ids[3], value)
        if reply is not None:
            replies.append(reply)
        return bool(replies)

    wait_for("A never reached D over three hops", lambda: answered_with(b"over three hops"), seconds=60)
    assert replies[0]["records"] == [{"type": PONG_TYPE, "hex": b"over three hops".hex()}]
    assert replies[0]["is_reply"] is True
    assert call(b, "onion-message", "stats")["relayed"] >= 2  # the ping and the pong both crossed B
    assert call(c, "onion-message", "stats")["relayed"] >= 2

    # BOLT 12 over the same three hops: D's offer, A fetches and checks an invoice for it.
    offer = call(d, "offer", "create", "25000", "a book", "--quantity-max", "3")["offer"]
    invoice = call(a, "offer", "fetch-invoice", offer, "--quantity", "2", "--payer-note", "for the shelf")
    assert invoice["amount_msat"] == 50_000 and invoice["node_id"] == ids[3]
    decoded = call(a, "offer", "decode", invoice["invoice"])
    assert decoded["type"] == "invoice" and decoded["signature_valid"] is True
    expired = call(d, "offer", "create", "any", "too late", "--absolute-expiry", "1")["offer"]
    refused = lightspeed(a, "offer", "fetch-invoice", expired, "--amount-msat", "1000", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("error: offer_absolute_expiry: ")

    # D hands out a blinded path (its peer C introduces it); A sends to it over B.
    path = call(d, "onion-message", "blinded-path")
    assert path["introduction_node"] == ids[2]
    before = call(d, "onion-message", "stats")["received"]
    sent = call(a, "onion-message", "send", path["blinded_path"], "--tlv", "77777=c0ffee")
    assert sent["first_hop"] == ids[1] and sent["hops"] == 3
    wait_for("D never got the message over its blinded path",
             lambda: call(d, "onion-message", "stats")["received"] == before + 1, seconds=20)
    last = call(d, "onion-message", "stats")["recent"][-1]
    assert last["records"] == [{"type": 77777, "hex": "c0ffee"}] and last["path_id"] == path["path_id"]

    asyncio.run(_hostile(started[1]))
    assert _ping_with_reply(a, ids[3], b"after the garbage") is not None  # B relays as before

    listens = [started[i].ready["listen"] for i in (2, 3)]
    for i in (2, 3):  # C and D restart (same addresses): channel peers dial them again
        started[i].stop()
    for i, listen in zip((2, 3), listens, strict=True):
        started[i] = Daemon(tmp_path / "cd"[i - 2], chain, listen, "--announce-channels")
    replies.clear()
    wait_for("no reply through the restarted C and D", lambda: answered_with(b"again"), seconds=60)
    assert replies[0]["records"] == [{"type": PONG_TYPE, "hex": b"again".hex()}]
    # D's offer, made before its restart, is still answered (nothing was stored for it).
    fetched = call(a, "offer", "fetch-invoice", offer, "--quantity", "1")
    assert fetched["amount_msat"] == 25_000 and fetched["node_id"] == ids[3]
