"""A full disk or a read-only file under the micro store and the chain file: clear errors, 503s.

The fault is real: the file lives on its own small tmpfs that a filler file exhausts (SQLite
gets ENOSPC from the kernel: SQLITE_FULL); where mounting is not permitted, SQLite's own
read-only mode (``PRAGMA query_only``: SQLITE_READONLY), as in ``test_store_faults_disk``.
What must hold: the error names the file and the reason (never a raw ``sqlite3`` error),
nothing is half-written, the REST APIs answer 503 with their JSON error shape, and once the
operator repaired the disk the same operation works.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.chain import RegtestChain
from lightspeed.errors import ChainError, ChainUnavailable, StorageUnavailable
from lightspeed.micro.asgi import LightspeedMiddleware
from lightspeed.micro.server import AllowanceServer, ServerPolicy
from lightspeed.micro.store import AllowanceState, AllowanceStoreUnavailable, Status, StoreError
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.micro.terms import Price
from lightspeed.micro.token import AllowanceRequest
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.support.ledger import Ledger
from tests.support.network import node_key, with_miner
from tests.test_micro_hashchain import naive_links
from tests.test_store_faults_disk import Disk

TOKEN = "e" * 32
FULL, READ_ONLY = "the disk is full", "the file is read-only"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    made = Disk(tmp_path / "disk")
    try:
        yield made
    finally:
        made.remove()


def fault(disk: Disk, db: sqlite3.Connection) -> str:
    """The next write through ``db`` fails for real; returns the reason the error must give."""
    if not disk.mounted:
        db.execute("PRAGMA query_only = 1")
        return READ_ONLY
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next commit needs new space on the disk
    fd = os.open(disk.path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(65536))
    except OSError:
        pass
    finally:
        os.close(fd)
    return FULL


def repair(disk: Disk, db: sqlite3.Connection) -> None:
    disk.repair()
    db.execute("PRAGMA query_only = 0")


ACTIVE = AllowanceState(Status.ACTIVE, 10)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])  # NORMAL commits on the loop (inline)
def test_micro_sqlite_store_names_the_file_and_the_reason_and_keeps_nothing(disk: Disk, synchronous: str) -> None:
    async def go() -> None:
        path = disk.path / "micro.sqlite"
        store = SqliteAllowanceStore(path, synchronous=synchronous)
        await store.create(b"a" * 16, b"terms", 2_000_000_000, [b"\x01" * 32], ACTIVE)
        reason = fault(disk, store._db)
        with pytest.raises(AllowanceStoreUnavailable) as raised:
            await store.create(b"b" * 16, b"terms" * 500, 2_000_000_000, [b"\x02" * 32] * 8, ACTIVE)
        assert isinstance(raised.value, StorageUnavailable) and isinstance(raised.value, StoreError)
        assert raised.value.path == str(path) and raised.value.reason.startswith(reason)
        assert str(raised.value).startswith(f"{path}: {reason}")
        assert await store.load(b"b" * 16) is None  # nothing half-written; reads still answer
        assert (await store.load(b"a" * 16)) is not None
        repair(disk, store._db)
        await store.create(b"b" * 16, b"terms" * 500, 2_000_000_000, [b"\x02" * 32] * 8, ACTIVE)  # works again
        assert (await store.load(b"b" * 16)) is not None
        await store.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_micro_rest_endpoints_answer_503_with_the_json_error_while_the_store_cannot_write(disk: Disk,
                                                                                          synchronous: str) -> None:
    async def go() -> None:
        ledger = Ledger()
        store = SqliteAllowanceStore(disk.path / "micro.sqlite", synchronous=synchronous)
        server = AllowanceServer(store, ledger, ledger.node_id, ServerPolicy(Price(5)), payer=ledger)

        async def served(request: Request) -> JSONResponse:
            return JSONResponse({"path": request.url.path})

        app = LightspeedMiddleware(Starlette(routes=[Route("/api/{name}", served)]), server, {"/api": 1})
        links = naive_links(b"\x09" * 32, 12)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.test") as http:
            created = await http.post("/lightspeed/allowances", json=AllowanceRequest(12, (links[0],)).to_json())
            assert created.status_code == 201
            allowance = created.json()["allowance"]
            ledger.pay_sync(allowance["invoice"])
            token = f"{allowance['id']}.0.1.{links[1].hex()}"
            assert (await http.get("/api/a", headers={"Lightspeed-Token": token})).status_code == 200

            reason = fault(disk, store._db)
            again = await http.post("/lightspeed/allowances", json=AllowanceRequest(12, (links[0],)).to_json())
            spend = await http.get("/api/b", headers={"Lightspeed-Token": f"{allowance['id']}.0.2.{links[2].hex()}"})
            for answer in (again, spend):
                assert answer.status_code == 503, answer.text
                error = answer.json()["error"]
                assert error["code"] == "store_unavailable"
                assert error["reason"].startswith(f"{disk.path / 'micro.sqlite'}: {reason}")
                assert answer.headers["retry-after"] == "30"
            repair(disk, store._db)
            spend = await http.get("/api/b", headers={"Lightspeed-Token": f"{allowance['id']}.0.2.{links[2].hex()}"})
            assert spend.status_code == 200  # the refused call spent nothing: the same token serves now
        await store.aclose()

    asyncio.run(go())


def test_chain_file_that_cannot_be_written_raises_chain_unavailable_naming_it(disk: Disk) -> None:
    path = disk.path / "chain.sqlite"
    chain = RegtestChain(path)
    height = chain.tip()[0]
    reason = fault(disk, chain._db)
    with pytest.raises(ChainUnavailable) as raised:
        chain.mine(1)
    assert isinstance(raised.value, ChainError) and isinstance(raised.value, StorageUnavailable)
    assert str(raised.value).startswith(f"{path}: {reason}")
    assert chain.tip()[0] == height  # nothing written, reads answer
    repair(disk, chain._db)
    chain.mine(1)
    assert chain.tip()[0] == height + 1
    chain.close()


def test_node_api_answers_503_naming_the_chain_file_when_a_force_close_cannot_be_broadcast(tmp_path: Path) -> None:
    disk = Disk(tmp_path / "disk", size="64m")  # room for a funded chain

    async def go() -> None:
        chain = RegtestChain(disk.path / "chain.sqlite")
        alice = Node(node_key(80), chain, b"nodefix fault alice", store=SqliteStore(tmp_path / "alice.sqlite"))
        bob = Node(node_key(81), chain, b"nodefix fault bob", store=SqliteStore(tmp_path / "bob.sqlite"))
        chain.fund(alice.wallet.new_key().script_pubkey, 2_000_000)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
        cids: list[bytes] = []

        async def open_one() -> None:
            cids.append(await alice.open_channel(bob.node_id, 1_000_000))

        await with_miner(chain, open_one)
        (cid,) = cids
        transport = httpx.ASGITransport(app=create_app(ApiContext(alice, listen="127.0.0.1:0"), TOKEN))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                reason = fault(disk, chain._db)
                answer = await client.post(f"/v1/channels/{cid.hex()}/force-close")
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["reason"].startswith(f"{disk.path / 'chain.sqlite'}: {reason}")
                assert cid in alice.channels and not alice.channel_is_closing(cid)  # nothing happened
                repair(disk, chain._db)
                answer = await client.post(f"/v1/channels/{cid.hex()}/force-close")
                assert answer.status_code == 200, answer.text
        finally:
            await alice.stop()
            await bob.stop()
            chain.close()

    try:
        asyncio.run(asyncio.wait_for(go(), 60))
    finally:
        disk.remove()


def test_micro_store_on_a_read_only_file_system_is_refused_at_open_naming_the_file(disk: Disk) -> None:
    path = disk.path / "micro.sqlite"

    async def make() -> None:
        store = SqliteAllowanceStore(path)
        await store.create(b"a" * 16, b"terms", 2_000_000_000, [b"\x01" * 32], ACTIVE)
        await store.aclose()

    asyncio.run(make())
    if disk.mounted:
        disk.read_only()
    else:  # cannot mount here (not root): a file and directory the process may not write
        os.chmod(path, 0o444)
        os.chmod(disk.path, 0o555)
    with pytest.raises(AllowanceStoreUnavailable) as raised:
        SqliteAllowanceStore(path)
    assert raised.value.path == str(path)
    assert raised.value.reason.startswith(("the file is read-only", "the file cannot be opened"))
