"""Electrum servers for chain-source tests: the real one over a chain file, a TLS front, hostile fronts.

Everything runs on one background event loop (the test's own thread stays synchronous, as the
node's calls into the chain source are): :class:`ServerLoop` hosts an
:class:`~lightspeed.node.electrum_server.ElectrumServer` on real loopback TCP, and proxies in
front of it that terminate TLS or rewrite chosen answers (a lying server).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lightspeed.chain.regtest import RegtestChain
from lightspeed.node.electrum_server import ElectrumServer

T = TypeVar("T")
Rewrite = Callable[[str, Any], Any]  # (method, result) -> the result the client gets


class ServerLoop:
    """A background event loop; ``run(coro)`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[ElectrumServer] = []
        self.proxies: list[asyncio.Server] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def electrum(self, chain_path: Path, port: int = 0) -> tuple[ElectrumServer, int]:
        server = ElectrumServer(RegtestChain(chain_path), poll_interval_s=0.05)
        bound = self.run(server.start("127.0.0.1", port))
        self.servers.append(server)
        return server, bound

    def stop_server(self, server: ElectrumServer) -> None:
        self.run(server.stop())
        server.chain.close()
        self.servers.remove(server)

    def proxy(self, upstream_port: int, rewrite: Rewrite | None = None, tls: ssl.SSLContext | None = None,
              garbage: bool = False, refuse: frozenset[str] = frozenset()) -> int:
        """A front on its own port: forwards lines both ways, passing answers through ``rewrite``;
        the methods in ``refuse`` are answered "method not found" without reaching the server."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if garbage:
                await reader.readline()
                writer.write(b"{this is not json\n")
                await writer.drain()
                await reader.read()  # keep it open: the client must be the one to give up
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port, limit=2**24)
            methods: dict[Any, str] = {}

            async def upward() -> None:
                while line := await reader.readline():
                    with contextlib.suppress(ValueError):
                        request = json.loads(line)
                        methods[request.get("id")] = request.get("method")
                        if request.get("method") in refuse:
                            error = {"code": -32601, "message": f"unknown method {request['method']}"}
                            writer.write(json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}).encode()
                                         + b"\n")
                            continue
                    up_writer.write(line)
                up_writer.close()

            async def downward() -> None:
                while line := await up_reader.readline():
                    if rewrite is not None:
                        message = json.loads(line)
                        method = methods.get(message.get("id"), message.get("method"))
                        if "result" in message:
                            message["result"] = rewrite(method, message["result"])
                        elif "params" in message:
                            message["params"] = rewrite(method, message["params"])
                        line = json.dumps(message).encode() + b"\n"
                    writer.write(line)
                writer.close()

            with contextlib.suppress(Exception):
                await asyncio.gather(upward(), downward())

        server = self.run(_start(serve, tls))
        self.proxies.append(server)
        return int(server.sockets[0].getsockname()[1])

    def close(self) -> None:
        for proxy in self.proxies:  # in the loop's thread: asyncio servers are not thread-safe
            self.loop.call_soon_threadsafe(proxy.close)
        for server in list(self.servers):
            self.stop_server(server)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def _start(serve: Any, tls: ssl.SSLContext | None) -> asyncio.Server:
    return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls, limit=2**24)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (what most Electrum servers present)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
