"""Issue 13 end to end between daemons: "a flood of onion messages from one peer throttled while
others' payments go on".

Three ``lightspeed node start`` processes A - B - C (announced channels, graph by gossip). A
scripted peer connects to B and sends it onion messages as fast as it can; B, with its default
limits (a burst of 200, then 50 a second per peer), drops what goes over the flooder's budget
and counts it against the flooder only. Meanwhile A pays C through B, and A's own onion message
crosses B to C and its reply comes back: B throttled the flooder, not itself, and kept the
flooder's connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lightspeed.codec.generated import OnionMessage as WireOnionMessage
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.node.onion_messenger import PING_TYPE
from lightspeed.node.onion_ratelimit import OnionMessageLimits
from lightspeed.node.peer import connect as connect_peer
from lightspeed.onion.blinding import EncryptedDataTlv, create_blinded_path
from lightspeed.onion.message import OnionMessagePayload, build_onion_message
from tests.test_daemon import Daemon, call, lightspeed, started, wait_for
from tests.test_onionmsg_daemons import _ping_with_reply

__all__ = ["started"]  # the fixture, used by name

FLOOD = 2_000


async def _flood(b: Daemon, payer: threading.Thread) -> tuple[bytes, int, float, bool]:
    """Valid onion messages for B from a fresh peer, in batches, at least :data:`FLOOD` and for as
    long as ``payer`` runs: its id, how many, the seconds it took, and whether B kept the connection."""
    b_id = bytes.fromhex(b.ready["node_id"])
    host, port = b.ready["listen"].rsplit(":", 1)
    key = os.urandom(32)
    peer = await connect_peer(host, int(port), key, b_id)
    path = create_blinded_path(os.urandom(32), [b_id], [EncryptedDataTlv()])
    _, message = build_onion_message(os.urandom(32), path, OnionMessagePayload(records=((PING_TYPE, b"spam"),)))
    wire = WireOnionMessage(message.path_key, message.onion_message_packet)
    began, sent = time.monotonic(), 0
    while (sent < FLOOD or payer.is_alive()) and sent < 50 * FLOOD:
        for _ in range(100):
            peer.session.send(wire)
        sent += 100
        await peer.flush()
    elapsed = time.monotonic() - began
    await asyncio.sleep(1.0)  # let B read what is still in flight
    still_open = not peer.session.closed
    await peer.close()
    return pubkey_from_privkey(key), sent, elapsed, still_open


@pytest.mark.slow
def test_a_flooding_peer_is_throttled_by_the_daemon_while_a_pays_c_through_it(tmp_path: Path,
                                                                             started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    for name in ("a", "b", "c"):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", "--announce-channels"))
    a, b, c = (daemon.datadir for daemon in started)
    c_id = started[2].ready["node_id"]
    call(a, "fund", "2000000")
    call(b, "fund", "2000000")
    call(a, "connect", started[1].peer_address)
    call(b, "connect", started[2].peer_address)
    call(a, "open-channel", started[1].ready["node_id"], "1000000")
    call(b, "open-channel", c_id, "1000000")
    call(a, "chain", "mine", "7", "--chain", str(chain))  # 6 confirmations: the channels get announced
    wait_for("A's channel never became ready", lambda: call(a, "channels")["channels"][0]["state"] == "normal")
    wait_for("B's channels never became ready",
             lambda: [ch["state"] for ch in call(b, "channels")["channels"]] == ["normal", "normal"])
    wait_for("A never reached C by onion message", lambda: _ping_with_reply(a, c_id, b"before") is not None, 60)

    # The flood, and at the same time A pays C through B (the CLI, in another thread).
    invoice = call(c, "invoice", "new", "40000000", "during the flood")
    outcome: dict[str, Any] = {}

    def pay() -> None:
        done = lightspeed(a, "pay", invoice["invoice"], check=False)
        outcome["paid"] = (done.returncode, done.stdout, done.stderr)

    payer = threading.Thread(target=pay)
    payer.start()
    flooder_id, sent, elapsed, still_open = asyncio.run(_flood(started[1], payer))
    payer.join(timeout=90)
    returncode, stdout, stderr = outcome["paid"]
    assert returncode == 0 and json.loads(stdout)["status"] == "succeeded", (stdout, stderr)
    assert still_open  # throttled, never disconnected

    limits = OnionMessageLimits()  # what the daemon runs with
    stats = call(b, "onion-message", "stats")
    dropped = stats["rate_limited_by_peer"][flooder_id.hex()]
    allowed_most = limits.burst + limits.per_second * (elapsed + 2)
    assert sent - allowed_most <= dropped < sent, (dropped, sent, elapsed)
    assert set(stats["rate_limited_by_peer"]) == {flooder_id.hex()}  # A was never throttled
    # A's own message still crosses B to C and the reply comes back.
    reply = _ping_with_reply(a, c_id, b"after the flood")
    assert reply is not None, "A's onion message did not get through B after the flood"
    received = call(c, "payments", "--direction", "received")["payments"]
    assert [p["payment_hash"] for p in received] == [invoice["payment_hash"]]
