"""Peers over loopback TCP: handshake + init, ping/pong, and misbehaving clients cut off alone."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from lightspeed.codec.features import Features, negotiate
from lightspeed.codec.messages import (
    Init,
    Ping,
    Pong,
    Warning,
    decode_message,
    encode_message,
    make_message,
)
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import PeerProtocolError
from lightspeed.node import Peer, PeerListener, connect
from lightspeed.transport import (
    Connected,
    Disconnected,
    Handshake,
    MessageReceived,
    PeerSession,
    SessionLimits,
)

SERVER_KEY, CLIENT_KEY = b"\x05" * 32, b"\x06" * 32
SERVER_PUB = pubkey_from_privkey(SERVER_KEY)


async def _echo(peer: Peer) -> None:
    async for message in peer:
        await peer.send(message)


def test_features_negotiation() -> None:
    ours = Features.of(required=["var_onion_optin"], optional=["basic_mpp", "payment_secret"])
    common = negotiate(ours, b"", Features.of(optional=["var_onion_optin", "payment_secret"]).to_bytes())
    assert common.supports("var_onion_optin") and common.supports("payment_secret")
    assert not common.supports("basic_mpp")
    with pytest.raises(PeerProtocolError, match="do not support"):
        negotiate(ours, b"", Features.of(required=["option_splice"]).to_bytes())
    with pytest.raises(PeerProtocolError, match="dependency"):
        negotiate(ours, b"", Features(frozenset({51})).to_bytes())  # option_zeroconf without option_scid_alias
    assert negotiate(ours, b"", Features(frozenset({101})).to_bytes()).bits <= ours.bits  # unknown odd: ignored


def test_sessions_in_memory_ping_pong_and_keepalive() -> None:
    limits = SessionLimits(ping_interval=30, ping_timeout=10)
    a = PeerSession(Handshake.initiator(CLIENT_KEY, SERVER_PUB), Features.of(optional=["var_onion_optin"]), 0.0, limits=limits)
    b = PeerSession(Handshake.responder(SERVER_KEY), Features.of(optional=["var_onion_optin"]), 0.0, limits=limits)

    def pump(now: float) -> list[object]:
        events: list[object] = []
        for _ in range(5):
            events += b.receive_data(a.data_to_send(), now)
            events += a.receive_data(b.data_to_send(), now)
        return events

    events = pump(0.0)
    assert sum(isinstance(e, Connected) for e in events) == 2 and a.ready and b.ready
    a.send(Ping(num_pong_bytes=3))
    assert pump(1.0) == []  # the pong is answered and consumed by the session itself
    assert a.next_deadline() == 31.0
    assert a.handle_timer(31.0) == []  # idle: a sends a keepalive ping
    pump(32.0)
    assert a.next_deadline() == 62.0  # the pong arrived and re-armed the interval
    a.handle_timer(62.0)  # another ping ... but b never answers it
    b.data_to_send()
    events = a.handle_timer(72.0)
    assert events == [Disconnected("no pong within the ping timeout")]


def test_first_message_must_be_init() -> None:
    a_handshake = Handshake.initiator(CLIENT_KEY, SERVER_PUB)
    b = PeerSession(Handshake.responder(SERVER_KEY), Features(), 0.0)
    b.receive_data(a_handshake.start(), 0.0)
    act3 = a_handshake.receive_data(b.data_to_send())
    transport = a_handshake.transport()
    events = b.receive_data(act3 + transport.send(encode_message(Ping(1))), 0.0)
    assert events == [Disconnected("first message was not init")]
    transport.receive_data(b.data_to_send())
    messages = [decode_message(m) for m in transport.messages()]
    assert isinstance(messages[0], Init) and isinstance(messages[1], Warning)


@pytest.mark.slow
def test_peers_over_tcp_and_a_bad_client_does_not_hurt_others() -> None:
    async def scenario() -> None:
        listener = PeerListener(SERVER_KEY, _echo)
        port = await listener.start()
        peer = await connect("127.0.0.1", port, CLIENT_KEY, SERVER_PUB)
        assert peer.remote_pubkey == SERVER_PUB
        # A generic BOLT 2 message goes through the echo and comes back intact.
        message = make_message("update_fee", channel_id=os.urandom(32), feerate_per_kw=2500)
        await peer.send(message)
        echoed = await asyncio.wait_for(peer.__aiter__().__anext__(), 5)
        assert echoed == message

        # 1. Garbage instead of a handshake.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(os.urandom(50))
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == b""  # closed without a reply
        w.close()

        # 2. A correct handshake, then a frame with a bad MAC.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        hs = Handshake.initiator(b"\x07" * 32, SERVER_PUB)
        w.write(hs.start())
        w.write(hs.receive_data(await r.readexactly(50)))
        bad = bytearray(hs.transport().send(b"\x00\x10\x00\x00\x00\x00"))
        bad[5] ^= 0xFF
        w.write(bytes(bad))
        await w.drain()
        await asyncio.wait_for(r.read(), 5)  # our init may arrive; then the server closes
        w.close()

        # 3. After init, a malformed message gets a warning, then the connection is closed.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        hs = Handshake.initiator(b"\x09" * 32, SERVER_PUB)
        w.write(hs.start())
        w.write(hs.receive_data(await r.readexactly(50)))
        transport = hs.transport()
        w.write(transport.send(encode_message(Init())) + transport.send(b"\x00\x86\x00"))  # update_fee, truncated
        await w.drain()
        transport.receive_data(await asyncio.wait_for(r.read(), 5))
        replies = [decode_message(m) for m in transport.messages()]
        assert isinstance(replies[0], Init) and isinstance(replies[-1], Warning)
        assert b"malformed" in replies[-1].data
        w.close()

        # 4. A client that requires a feature nobody supports gets a warning and is cut off.
        bad = await connect("127.0.0.1", port, b"\x08" * 32, SERVER_PUB, features=Features.of(required=["option_splice"]))
        warning = await asyncio.wait_for(bad.__aiter__().__anext__(), 5)
        assert isinstance(warning, Warning) and b"62 (option_splice)" in warning.data
        await asyncio.wait_for(bad.closed(), 5)

        # The first peer is unaffected.
        await peer.send(Ping(num_pong_bytes=0))
        await peer.send(message)
        assert await asyncio.wait_for(peer.__aiter__().__anext__(), 5) == message
        assert listener.failed_connections >= 2
        await peer.close()
        await listener.stop()

    asyncio.run(scenario())


def test_oversized_frame_is_refused_from_its_length_prefix() -> None:
    limits = SessionLimits(max_message_size=1000)
    a = PeerSession(Handshake.initiator(CLIENT_KEY, SERVER_PUB), Features(), 0.0)
    b = PeerSession(Handshake.responder(SERVER_KEY), Features(), 0.0, limits=limits)
    for _ in range(3):
        b.receive_data(a.data_to_send(), 0.0)
        a.receive_data(b.data_to_send(), 0.0)
    assert a.ready and b.ready
    a.send(make_message("update_add_htlc", channel_id=bytes(32), id=0, amount_msat=1, payment_hash=bytes(32),
                        cltv_expiry=1, onion_routing_packet=bytes(1366)))
    frame = a.data_to_send()
    events = b.receive_data(frame[:18], 0.0)  # the length prefix alone is enough to refuse
    assert len(events) == 1 and isinstance(events[0], Disconnected) and "exceeds our limit" in events[0].reason


def test_raw_socket_sees_init_first() -> None:
    """What a foreign implementation sees: our init is the first message after act three."""

    async def scenario() -> None:
        listener = PeerListener(SERVER_KEY, _echo)
        port = await listener.start()
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        hs = Handshake.initiator(CLIENT_KEY, SERVER_PUB)
        await loop.sock_sendall(sock, hs.start())
        data = b""
        while len(data) < 50:
            data += await loop.sock_recv(sock, 50 - len(data))
        await loop.sock_sendall(sock, hs.receive_data(data))
        transport = hs.transport()
        while transport.next_message() is None:
            transport.receive_data(await loop.sock_recv(sock, 4096))
        sock.close()
        await listener.stop()

    asyncio.run(scenario())


def test_session_events_are_values() -> None:
    assert MessageReceived(Pong()) == MessageReceived(Pong(b""))


def test_a_connection_we_close_reads_as_closed_at_once_even_if_its_reader_is_cancelled() -> None:
    """``Peer.close`` closes the session itself: a read loop cancelled before it saw the EOF
    must not leave a closed connection looking live (``peer_ids`` would list it for ever)."""
    async def scenario() -> None:
        listener = PeerListener(SERVER_KEY, _echo)
        port = await listener.start()
        peer = await connect("127.0.0.1", port, CLIENT_KEY, SERVER_PUB)
        assert not peer.session.closed
        closing = asyncio.ensure_future(peer.close())
        await asyncio.sleep(0)  # close has cancelled the read loop; nothing has read the EOF yet
        assert peer.session.closed and peer.disconnect_reason == "closed by us"
        await closing
        assert peer.session.closed and peer.session.close() == []  # a second close: no second event
        await listener.stop()

    asyncio.run(scenario())
