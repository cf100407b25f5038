"""Connection floods against the P2P listener (issue 11, item 13), over real loopback sockets.

A flooder opens raw TCP connections and never starts the BOLT 8 handshake. The
listener keeps at most ``max_per_address`` connections from one address,
``max_connections`` in all and ``max_pending_handshakes`` unfinished ones; a
connection past a limit is closed at once, an established peer is never
touched, and a pending handshake ends after the handshake timeout, freeing its
place. Loopback has a whole /8, so 127.0.0.2 and up stand in for other hosts.

The last test floods a real daemon whose descriptor limit is 1,024 with 1,100
connections: before the limits this made its REST API unreachable.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from lightspeed.api.datadir import Datadir
from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES, ListenerLimits, Peer, PeerListener, address_key
from lightspeed.transport import Handshake, PeerSession, SessionLimits

SERVER_KEY = b"\x31" * 32
SERVER_PUB = pubkey_from_privkey(SERVER_KEY)


async def _hold(peer: Peer) -> None:
    async for _ in peer:
        pass


async def raw(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection that never says a word."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source, 0))
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def closed_by_server(sock: socket.socket, within: float = 3.0) -> bool:
    """True once the server closes ``sock`` (FIN or RST); False if it is still open after ``within``."""
    try:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 1), within)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    assert data == b"", "the listener sent something to a client that never started the handshake"
    return True


async def honest(port: int, key: bytes, source: str = "127.0.0.1") -> Peer:
    """A real peer: handshake and init, from ``source``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    session = PeerSession(Handshake.initiator(key, SERVER_PUB), DEFAULT_FEATURES, time.monotonic())
    peer = Peer(reader, writer, session)
    await asyncio.wait_for(peer.connected(), 5)
    return peer


async def still_up(peer: Peer) -> bool:
    """The connection works: a ping is answered (the session checks the pong)."""
    from lightspeed.codec.messages import Ping

    await peer.send(Ping(num_pong_bytes=4))
    await asyncio.sleep(0.2)
    return not peer.session.closed


def run(limits: ListenerLimits, scenario: Callable[[PeerListener, int], Awaitable[None]],
        session_limits: SessionLimits | None = None) -> None:
    async def main() -> None:
        listener = PeerListener(SERVER_KEY, _hold, limits=session_limits, listener_limits=limits)
        port = await listener.start()
        try:
            await scenario(listener, port)
        finally:
            await listener.stop()

    asyncio.run(main())


def test_per_address_limit_n_kept_n_plus_1_closed_and_others_still_connect() -> None:
    async def scenario(listener: PeerListener, port: int) -> None:
        flood = [await raw(port) for _ in range(3)]
        extra = await raw(port)
        assert await closed_by_server(extra)  # the 4th from 127.0.0.1: closed at once
        assert not any([await closed_by_server(s, 0.2) for s in flood])  # the first 3 are kept
        assert listener.refused_connections == 1
        other = await honest(port, b"\x41" * 32, source="127.0.0.2")  # another address is not affected
        assert len(listener.peers) == 1
        more = [await raw(port) for _ in range(5)]
        assert all([await closed_by_server(s) for s in more])
        assert await still_up(other)
        for s in [*flood, extra, *more]:
            s.close()
        await other.close()

    run(ListenerLimits(max_connections=10, max_per_address=3, max_pending_handshakes=8), scenario)


def test_total_limit_counts_every_address() -> None:
    async def scenario(listener: PeerListener, port: int) -> None:
        established = await honest(port, b"\x42" * 32, source="127.0.0.2")
        flood = [await raw(port, f"127.0.1.{i}") for i in range(1, 4)]  # 4 connections in all: the limit
        extra = await raw(port, "127.0.1.9")
        assert await closed_by_server(extra)
        assert not any([await closed_by_server(s, 0.2) for s in flood])
        assert await still_up(established)
        for s in flood:
            s.close()
        for _ in range(100):  # their places come back once the listener sees them go
            probe = await raw(port, "127.0.1.10")
            kept = not await closed_by_server(probe, 0.1)
            probe.close()
            if kept:
                break
        else:
            raise AssertionError("closed connections did not free their places")
        extra.close()
        await established.close()

    run(ListenerLimits(max_connections=4, max_per_address=10, max_pending_handshakes=10), scenario)


def test_pending_handshakes_are_limited_and_time_out() -> None:
    async def scenario(listener: PeerListener, port: int) -> None:
        established = await honest(port, b"\x43" * 32)  # established peers are not pending ones
        started = time.monotonic()
        flood = [await raw(port, f"127.0.2.{i}") for i in range(1, 4)]  # 3 pending: the limit
        extra = await raw(port, "127.0.2.9")
        assert await closed_by_server(extra, 0.5)  # closed at once, long before the handshake timeout
        assert not any([await closed_by_server(s, 0.05) for s in flood])
        # The handshake timeout closes the silent ones and frees their places.
        assert all([await closed_by_server(s, 5) for s in flood])
        assert time.monotonic() - started >= 0.8
        late = await honest(port, b"\x44" * 32, source="127.0.2.10")
        assert len(listener.peers) == 2 and await still_up(established) and await still_up(late)
        assert listener.failed_connections == 3 and listener.refused_connections == 1
        for s in [*flood, extra]:
            s.close()
        await established.close()
        await late.close()

    run(ListenerLimits(max_connections=10, max_per_address=10, max_pending_handshakes=3), scenario,
        SessionLimits(handshake_timeout=1.0))


def test_connections_count_by_ipv4_address_or_ipv6_64() -> None:
    assert address_key("127.0.0.1") == "127.0.0.1"
    assert address_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::7") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"


def test_the_default_limits_fit_a_1024_descriptor_process() -> None:
    limits = ListenerLimits()
    assert limits.max_per_address < limits.max_pending_handshakes < limits.max_connections <= 512


# -- a real daemon -------------------------------------------------------------------------------

def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.mark.slow
def test_a_flood_of_1100_connections_leaves_the_daemon_serving(tmp_path: Path) -> None:
    datadir = tmp_path / "node"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lightspeed", "node", "start", "--datadir", str(datadir), "--listen", "127.0.0.1:0",
         "--api", "127.0.0.1:0", "--chain", str(tmp_path / "chain.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, preexec_fn=_limit_descriptors)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        p2p_port = int(ready["listen"].rsplit(":", 1)[1])
        daemon_id = bytes.fromhex(ready["node_id"])
        headers = {"Authorization": f"Bearer {Datadir(datadir).token()}"}
        defaults = ListenerLimits()

        async def flood(sources: list[str]) -> list[socket.socket]:
            return [await raw(p2p_port, sources[i % len(sources)]) for i in range(1100)]

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=f"http://{ready['api']}", headers=headers, timeout=5) as client:
                async def answers() -> bool:
                    started = time.monotonic()
                    info = await client.get("/v1/getinfo")
                    return info.status_code == 200 and time.monotonic() - started < 2

                # 1. One flooding host: it keeps max_per_address places, an honest peer still gets in.
                sockets = await flood(["127.0.0.2"])
                assert await answers()
                node = Node(sha256(b"honest"), RegtestChain(":memory:"), sha256(b"honest wallet"))
                await asyncio.wait_for(node.connect("127.0.0.1", p2p_port, daemon_id), 5)
                assert node.node_id.hex() in [p["node_id"] for p in (await client.get("/v1/peers")).json()["peers"]]
                assert sum([await closed_by_server(s, 0.01) for s in sockets]) == 1100 - defaults.max_per_address
                # 2. Many flooding hosts: pending handshakes fill up, the rest is closed, the process keeps
                # its descriptors; the established peer and the REST API go on.
                sockets += await flood([f"127.0.3.{i}" for i in range(1, 201)])
                assert await answers()
                kept = 2200 - sum([await closed_by_server(s, 0.01) for s in sockets])
                assert kept == defaults.max_pending_handshakes
                assert daemon_id in node.peer_ids()
                assert node.node_id.hex() in [p["node_id"] for p in (await client.get("/v1/peers")).json()["peers"]]
                for s in sockets:  # the flood ends: new peers get in again
                    s.close()
                later = Node(sha256(b"later"), RegtestChain(":memory:"), sha256(b"later wallet"))
                for _ in range(50):
                    try:
                        await asyncio.wait_for(later.connect("127.0.0.1", p2p_port, daemon_id), 5)
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
                assert daemon_id in later.peer_ids()
                await node.stop()
                await later.stop()

        asyncio.run(scenario())
    finally:
        process.terminate()
        process.wait(10)
