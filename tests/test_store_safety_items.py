"""Issue 11, items 5, 15 and 17: closed channels and funds in limbo survive restarts, the store
file is private and a corrupt one is refused clearly, and invoices are looked up lazily and pruned."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import lightspeed.node.invoices as invoices_module
from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import sha256
from lightspeed.node.node import Node
from lightspeed.store import STORE_FILE, SqliteStore, open_store
from tests.onchain_support import mine, open_paid_channel
from tests.test_daemon import PYTHON, Daemon

TOKEN = "t" * 32


def test_the_store_files_are_private(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with store.transaction():
        store.put_peer(b"\x02" * 33, "127.0.0.1", 9735)
    for name in (STORE_FILE, f"{STORE_FILE}-wal", f"{STORE_FILE}-shm"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    store.close()


@pytest.mark.slow
def test_a_corrupt_store_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    chain, datadir = tmp_path / "chain.sqlite", tmp_path / "alice"
    Daemon(datadir, chain).stop()
    for suffix in ("-wal", "-shm"):
        Path(f"{datadir / STORE_FILE}{suffix}").unlink(missing_ok=True)
    (datadir / STORE_FILE).write_bytes(b"this is not SQLite at all" * 100)
    result = subprocess.run([PYTHON, "-m", "lightspeed", "node", "start", "--datadir", str(datadir),
                             "--listen", "127.0.0.1:0", "--chain", str(chain)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and "node.sqlite" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_closed_channels_and_funds_in_limbo_are_listed_across_restarts(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x51)
        await alice.force_close_channel(cid, "test")
        await mine(chain, 2)
        await alice.stop()
        alice = Node(bytes([0x51]) * 32, chain, b"alice wallet seed %d" % 0x51,
                     store=SqliteStore(tmp_path / "alice.sqlite"))
        await alice.start()
        ctx = ApiContext(alice, listen="127.0.0.1:0")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx, TOKEN)),
                                     base_url="http://node", headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            listed = (await api.get("/v1/channels")).json()["channels"]
            assert [(c["channel_id"], c["state"]) for c in listed] == [(cid.hex(), "closed")]
            assert listed[0]["closing_txid"] is not None and listed[0]["limbo_sat"] > 0
            balance = (await api.get("/v1/balance")).json()
            assert balance["limbo_sat"] == listed[0]["limbo_sat"]
            assert all(s["maturity_height"] > chain.tip()[0] for s in balance["limbo_sweeps"])
            await mine(chain, 150)  # past the to_self_delay: the sweep confirms
            for _ in range(200):
                balance = (await api.get("/v1/balance")).json()
                if balance["limbo_sat"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert balance["limbo_sat"] == 0 and balance["onchain_sat"] > 0
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_invoices_are_not_decoded_at_start_and_expired_unpaid_ones_are_pruned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = RegtestChain(":memory:")
    key = sha256(b"lazy invoices")
    node = Node(key, chain, key, store=SqliteStore(tmp_path / "n.sqlite"))
    now = time.time()
    fresh = [node.create_invoice(1000 + i, f"invoice {i}", expiry=3600) for i in range(300)]
    old = node.create_invoice(5, "long expired", expiry=1)
    decoded: list[str] = []
    real_decode = invoices_module.decode
    monkeypatch.setattr(invoices_module, "decode", lambda text: decoded.append(text) or real_decode(text))
    monkeypatch.setattr(time, "time", lambda: now + invoices_module.PRUNE_GRACE_S + 10)  # a day later
    restarted = Node(key, chain, key, store=SqliteStore(tmp_path / "n.sqlite"))
    assert decoded == []  # 301 invoices stored, none decoded to start
    assert restarted.store.invoice(old.payment_hash) is None  # expired a day ago, never paid: pruned
    assert restarted.store.invoice(fresh[7].payment_hash) is not None  # expired less than the grace ago: kept
