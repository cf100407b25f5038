"""The Electrum server over real TCP, following a chain file that other processes write."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lightspeed.bitcoin.address import script_to_address
from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.bitcoin.tx import OutPoint, TxOut
from lightspeed.chain import RegtestChain
from lightspeed.chain.electrum_rpc import MAX_LINE_BYTES
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.node.electrum_server import ElectrumServer
from tests.test_chain import KEY, SPK, spend_p2wpkh
from tests.test_chain_locked import locked_by_another_process, release

SH = sha256(SPK)[::-1].hex()
PUSHED_WITHIN_S = 5.0  # the server polls every 0.2 s; the margin is for a loaded CI machine (the client's own wait is 15 s)
OTHER = p2wpkh_script(pubkey_from_privkey(b"\x71" * 32))
_BROADCAST = "import sys; from lightspeed.chain import RegtestChain; from lightspeed.bitcoin.tx import Transaction; " \
             "RegtestChain(sys.argv[1]).broadcast(Transaction.parse(bytes.fromhex(sys.argv[2])))"


class Client:
    """A minimal Electrum-protocol client: requests with ids, notifications kept apart."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ids = itertools.count(1)
        self.notifications: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port, limit=2**24))

    async def _read(self, timeout: float) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        assert line.endswith(b"\n"), line
        message: dict[str, Any] = json.loads(line)
        return message

    async def request(self, method: str, *params: Any) -> Any:
        request_id = next(self.ids)
        self.writer.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                                      "params": list(params)}).encode() + b"\n")
        while True:
            message = await self._read(15)
            if "method" in message:
                self.notifications.append(message)
                continue
            assert message["id"] == request_id
            if "error" in message:
                raise RuntimeError(message["error"]["message"])
            return message["result"]

    async def notification(self, method: str, timeout: float = PUSHED_WITHIN_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.notifications:
                if message["method"] == method:
                    self.notifications.remove(message)
                    return message
            self.notifications.append(await self._read(max(0.001, deadline - time.monotonic())))

    def close(self) -> None:
        self.writer.close()


async def run_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Another process writing to the chain file (run off the event loop so the server keeps serving)."""
    return await asyncio.to_thread(subprocess.run, [sys.executable, *args], capture_output=True, text=True,
                                   timeout=60, check=True, env={**os.environ})


@pytest.mark.slow
def test_subscriptions_follow_blocks_and_broadcasts_by_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"

    async def scenario() -> None:
        chain = RegtestChain(path)
        server = ElectrumServer(chain)
        port = await server.start()
        client = await Client.connect(port)
        assert (await client.request("server.version", "test", ["1.4", "1.6"]))[1] == "1.6"
        tip = await client.request("blockchain.headers.subscribe")
        assert await client.request("blockchain.scripthash.subscribe", SH) is None
        # Another process pays SPK from the faucet and mines: a new tip and a new status, pushed (a poll is 0.2 s).
        sent = await run_process("-m", "lightspeed", "chain", "send", script_to_address(SPK, REGTEST), "100000",
                                 "--chain", str(path))
        done = time.monotonic()
        header = await client.notification("blockchain.headers.subscribe")
        assert header["params"][0]["height"] > tip["height"]
        # The faucet may mine in more than one commit (maturity blocks, then the confirming block), and
        # the server may see them in separate polls: follow the notifications up to the final tip.
        final_height = chain.tip()[0]
        while header["params"][0]["height"] < final_height:
            header = await client.notification("blockchain.headers.subscribe")
        assert header["params"][0]["height"] == final_height
        status = await client.notification("blockchain.scripthash.subscribe")
        assert time.monotonic() - done < PUSHED_WITHIN_S
        assert status["params"][0] == SH and status["params"][1] is not None
        history = await client.request("blockchain.scripthash.get_history", SH)
        txid = json.loads(sent.stdout)["txid"]
        assert [h["tx_hash"] for h in history] == [txid]
        # Another process broadcasts a spend (mempool only): a new status, no new header.
        spend = spend_p2wpkh(OutPoint(bytes.fromhex(txid)[::-1], 0), 100_000, [TxOut(90_000, SPK)], key=KEY)
        await run_process("-c", _BROADCAST, str(path), spend.serialize().hex())
        done = time.monotonic()
        status = await client.notification("blockchain.scripthash.subscribe")
        assert time.monotonic() - done < PUSHED_WITHIN_S
        history = await client.request("blockchain.scripthash.get_history", SH)
        assert history[-1] == {"tx_hash": spend.txid_hex, "height": 0, "fee": 10_000}
        # Our own client broadcasts: accepted through the server, notified like any other change.
        again = spend_p2wpkh(OutPoint(spend.txid, 0), 90_000, [TxOut(80_000, OTHER)], key=KEY)
        assert await client.request("blockchain.transaction.broadcast", again.serialize().hex()) == again.txid_hex
        await client.notification("blockchain.scripthash.subscribe")
        assert not any(n["method"] == "blockchain.headers.subscribe" for n in client.notifications)
        client.close()
        await server.stop()
        chain.close()

    asyncio.run(scenario())


def test_an_overlong_line_is_refused_and_other_clients_are_served(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain = RegtestChain(tmp_path / "chain.sqlite")
        server = ElectrumServer(chain)
        port = await server.start()
        greedy = await Client.connect(port)
        greedy.writer.write(b'{"id": 1, "method": "server.ping", "params": ["' + b"a" * MAX_LINE_BYTES + b'"]}\n')
        reply = await greedy._read(15)
        assert reply["error"]["code"] == -32600 and "longer than" in reply["error"]["message"]
        assert await asyncio.wait_for(greedy.reader.read(), 5) == b""  # closed by the server
        fine = await Client.connect(port)
        assert await fine.request("server.ping") is None
        fine.writer.write(b"garbage\n")
        assert (await fine._read(5))["error"]["code"] == -32700
        assert await fine.request("blockchain.block.header", 0)  # still served after bad input
        fine.close()
        await server.stop()
        chain.close()

    asyncio.run(scenario())


def test_a_broadcast_waits_out_a_lock_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"

    async def scenario() -> None:
        chain = RegtestChain(path)
        coin = chain.fund(SPK, 100_000)
        server = ElectrumServer(chain)
        port = await server.start()
        client = await Client.connect(port)
        tx = spend_p2wpkh(coin, 100_000, [TxOut(99_000, OTHER)], key=KEY)
        with locked_by_another_process(path) as locker:
            pending = asyncio.create_task(client.request("blockchain.transaction.broadcast", tx.serialize().hex()))
            await asyncio.sleep(1.5)
            assert not pending.done()
            other = await Client.connect(port)
            assert await other.request("server.ping") is None  # the server is not frozen meanwhile
            release(locker)
            assert await asyncio.wait_for(pending, 10) == tx.txid_hex
        assert chain.get_transaction(tx.txid) == (tx, 0)
        client.close()
        other.close()
        await server.stop()
        chain.close()

    asyncio.run(scenario())


def test_serve_electrum_prints_its_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "lightspeed", "chain", "serve-electrum", "--chain", str(path),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        host, port, transport = ready["electrum_server"].split(":")
        assert (host, transport) == ("127.0.0.1", "t")

        async def ask() -> Any:
            client = await Client.connect(int(port))
            features = await client.request("server.features")
            client.close()
            return features

        assert asyncio.run(ask())["genesis_hash"] == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        assert path.exists()  # created, ready for daemons to share
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    taken = subprocess.run([sys.executable, "-m", "lightspeed", "chain", "serve-electrum", "--chain", str(path),
                            "--listen", "nowhere"], capture_output=True, text=True, timeout=30, check=False)
    assert taken.returncode == 1 and taken.stderr.startswith("error: --listen must be HOST:PORT")
