"""BOLT 8 interop with pyln-proto (Core Lightning's Python implementation) over real TCP sockets.

Both roles: our initiator against pyln's responder and pyln's initiator against
ours, then messages both ways across a key rotation. INTEROP.md: pyln-proto never
sets TCP_NODELAY, so we set it on every socket here.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from pyln.proto.primitives import PrivateKey as PylnPrivateKey
from pyln.proto.wire import LightningServerSocket, connect

from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.transport import Handshake, NoiseTransport

pytestmark = pytest.mark.interop
OUR_KEY, THEIR_KEY = b"\x41" * 32, b"\x42" * 32
MESSAGES = [b"", b"x", bytes(range(256)) * 4, b"\xff" * 65535] + [b"m%d" % i for i in range(600)]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _our_messages(sock: socket.socket, transport: NoiseTransport, count: int) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < count:
        out.extend(transport.messages())
        if len(out) < count:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("peer closed")
            transport.receive_data(chunk)
    return out


def _run_in_thread(target: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def wrapper() -> None:
        try:
            box["result"] = target()
        except Exception as exc:  # surfaced in the main thread
            box["error"] = exc

    thread = threading.Thread(target=wrapper, daemon=True)
    thread.start()
    return thread, box


def test_our_initiator_with_pyln_responder() -> None:
    server = LightningServerSocket(PylnPrivateKey(THEIR_KEY))
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def pyln_side() -> list[bytes]:
        conn, _ = server.accept()
        conn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        received = [conn.read_message() for _ in MESSAGES]
        for m in received:
            conn.send_message(m[::-1])
        return received

    thread, box = _run_in_thread(pyln_side)
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    handshake = Handshake.initiator(OUR_KEY, pubkey_from_privkey(THEIR_KEY))
    sock.sendall(handshake.start())
    sock.sendall(handshake.receive_data(_recv_exactly(sock, 50)))
    assert handshake.complete
    transport = handshake.transport()
    sock.sendall(b"".join(transport.send(m) for m in MESSAGES))
    echoed = _our_messages(sock, transport, len(MESSAGES))
    thread.join(20)
    sock.close()
    server.close()
    assert "error" not in box, box.get("error")
    assert box["result"] == MESSAGES
    assert echoed == [m[::-1] for m in MESSAGES]


def test_pyln_initiator_with_our_responder() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def pyln_side() -> list[bytes]:
        conn = connect(PylnPrivateKey(THEIR_KEY), pubkey_from_privkey(OUR_KEY), "127.0.0.1", port)
        conn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for m in MESSAGES:
            conn.send_message(m)
        return [conn.read_message() for _ in MESSAGES]

    thread, box = _run_in_thread(pyln_side)
    sock, _ = listener.accept()
    sock.settimeout(20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    handshake = Handshake.responder(OUR_KEY)
    sock.sendall(handshake.receive_data(_recv_exactly(sock, 50)))
    handshake.receive_data(_recv_exactly(sock, 66))
    assert handshake.complete
    assert handshake.remote_pubkey == pubkey_from_privkey(THEIR_KEY)
    transport = handshake.transport()
    received = _our_messages(sock, transport, len(MESSAGES))
    sock.sendall(b"".join(transport.send(m[::-1]) for m in received))
    thread.join(20)
    sock.close()
    listener.close()
    assert "error" not in box, box.get("error")
    assert received == MESSAGES
    assert box["result"] == [m[::-1] for m in MESSAGES]


def test_peer_deviation_pyln_act_one_bad_mac_is_not_raised() -> None:
    """INTEROP.md: pyln-proto builds an error for a bad act-1 MAC but never raises it.
    Our responder rejects the same bytes."""
    from pyln.proto.wire import LightningConnection

    initiator = Handshake.initiator(OUR_KEY, pubkey_from_privkey(THEIR_KEY))
    act1 = bytearray(initiator.start())
    act1[-1] ^= 1
    theirs = LightningConnection(None, remote_pubkey=None, local_privkey=PylnPrivateKey(THEIR_KEY), is_initiator=False)
    theirs.handshake_act_one_responder(bytes(act1))  # accepted silently
    ours = Handshake.responder(THEIR_KEY)
    from lightspeed.errors import HandshakeError

    with pytest.raises(HandshakeError, match="MAC"):
        ours.receive_data(bytes(act1))


def test_pyln_client_against_our_listener_init_and_ping() -> None:
    """pyln-proto connects to our asyncio PeerListener: init both ways, then ping -> pong."""
    import asyncio

    from lightspeed.codec.messages import Init, Pong, decode_message
    from lightspeed.node import PeerListener

    async def serve_until_done(done: threading.Event) -> None:
        async def on_peer(peer: Any) -> None:
            async for _ in peer:
                pass

        listener = PeerListener(OUR_KEY, on_peer)
        port = await listener.start()
        box["port"] = port
        started.set()
        while not done.is_set():
            await asyncio.sleep(0.01)
        await listener.stop()

    box: dict[str, Any] = {}
    started, done = threading.Event(), threading.Event()
    server = threading.Thread(target=lambda: asyncio.run(serve_until_done(done)), daemon=True)
    server.start()
    assert started.wait(10)
    try:
        conn = connect(PylnPrivateKey(THEIR_KEY), pubkey_from_privkey(OUR_KEY), "127.0.0.1", box["port"])
        conn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.connection.settimeout(10)
        ours = decode_message(conn.read_message())
        assert isinstance(ours, Init) and ours.features  # our init comes first
        conn.send_message(bytes.fromhex("001000000000"))  # their init: no features
        conn.send_message(bytes.fromhex("0012" "0004" "0000"))  # ping asking for 4 bytes
        assert decode_message(conn.read_message()) == Pong(bytes(4))
    finally:
        done.set()
        server.join(10)


def test_our_node_connects_to_pyln_server_init_and_ping_both_ways() -> None:
    """Our asyncio connect() against pyln-proto's responder: init exchange, then pings both ways."""
    import asyncio

    from lightspeed.codec.messages import Init, Ping, decode_message
    from lightspeed.node import connect as node_connect

    server = LightningServerSocket(PylnPrivateKey(THEIR_KEY))
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def pyln_side() -> list[Any]:
        conn, _ = server.accept()
        conn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.connection.settimeout(10)
        seen = [decode_message(conn.read_message())]  # our init
        conn.send_message(bytes.fromhex("001000000000"))  # pyln's side: init without features
        seen.append(decode_message(conn.read_message()))  # our ping
        conn.send_message(bytes.fromhex("0013" "0004" "00000000"))  # pong with 4 bytes
        conn.send_message(bytes.fromhex("0012" "0002" "0000"))  # ping asking for 2 bytes
        seen.append(decode_message(conn.read_message()))  # our pong
        return seen

    thread, box = _run_in_thread(pyln_side)

    async def ours() -> None:
        peer = await node_connect("127.0.0.1", port, OUR_KEY, pubkey_from_privkey(THEIR_KEY))
        await peer.send(Ping(num_pong_bytes=4))
        reason = await asyncio.wait_for(peer.closed(), 10)
        # pyln's side hangs up when its script ends; nothing before that broke the protocol
        assert reason == "peer closed the connection"

    asyncio.run(ours())
    thread.join(10)
    server.close()
    assert "error" not in box, box.get("error")
    init, ping, pong = box["result"]
    assert isinstance(init, Init) and init.features
    assert ping == Ping(num_pong_bytes=4)
    assert pong.ignored == bytes(2)
