"""Issue 17 audit: `pay --max-fee-percent`, a held payment seen through `pay --timeout` and
`trackpayment`, and `close` by funding outpoint or by peer, typed as a
person types them (the `lightspeed` CLI in a subprocess) against three real nodes over TCP whose
REST APIs are served by uvicorn on loopback (A - B - C, B forwards for a fee).

The REST side of the fee limits is tested in test_ops17_graph.py and `close` by short channel id
in test_ops17_cli.py; what was untested is the CLI's part: the percentage reaching the daemon as
the right budget, and the outpoint/peer forms finding the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.channel.htlc_log import Side
from lightspeed.node.node import Node
from tests.support.network import until
from tests.test_gossip_node import direction_policy, line

TOKEN = "p" * 32


@contextlib.asynccontextmanager
async def served(node: Node, datadir: Path) -> AsyncIterator[Path]:
    """NODE's API on a loopback port, with the datadir files the CLI reads to find it."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(ApiContext(node), TOKEN), log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    datadir.mkdir()
    (datadir / "api_address").write_text(f"127.0.0.1:{sock.getsockname()[1]}")
    (datadir / "api_token").write_text(TOKEN)
    try:
        yield datadir
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def lightspeed(datadir: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lightspeed", *args, "--datadir", str(datadir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
    return process.returncode, out.decode(), err.decode()


async def ok_json(datadir: Path, *args: str) -> Any:
    code, out, err = await lightspeed(datadir, *args)
    assert code == 0, (args, err)
    return json.loads(out)


@pytest.mark.slow
def test_pay_with_a_fee_percent_and_close_by_outpoint_or_peer(tmp_path: Path) -> None:
    amount_msat = 20_000_000

    async def scenario() -> None:
        _chain, (a, b, c), _ports, _scids = await line()
        try:
            await until(lambda: direction_policy(a, _scids[1], b.node_id) is not None, timeout=15)
            fee = b.forwarding_policy.fee_msat(amount_msat)
            assert fee > 0
            ppm_at = -(-fee * 1_000_000 // amount_msat)  # the smallest budget in ppm that covers the fee
            async with served(a, tmp_path / "a") as dir_a, served(b, tmp_path / "b") as dir_b, \
                    served(c, tmp_path / "c") as dir_c:
                invoice = (await ok_json(dir_c, "invoice", "new", f"{amount_msat}msat", "tea"))["invoice"]
                # One ppm short of the fee: refused, nothing sent.
                code, out, err = await lightspeed(dir_a, "pay", invoice, "--max-fee-percent", f"{(ppm_at - 1) / 10_000}")
                assert code == 1 and out == "" and err.startswith("error: "), (code, out, err)
                assert (await ok_json(dir_c, "invoice", "lookup", invoice_hash(invoice)))["status"] == "unpaid"
                # Exactly enough: paid, and the fee is in the result.
                paid = await ok_json(dir_a, "pay", invoice, "--max-fee-percent", f"{ppm_at / 10_000}")
                assert (paid["status"], paid["fee_msat"]) == ("succeeded", fee)

                # A payment C holds: `pay` gives up at its --timeout naming the command that waits for
                # the end; `trackpayment` sees it pending, then succeeded once C settles it.
                preimage = bytes(range(32))
                held_hash = hashlib.sha256(preimage).hexdigest()
                held = (await ok_json(dir_c, "invoice", "new", "1000sat", "held", "--hold", held_hash))["invoice"]
                code, out, err = await lightspeed(dir_a, "pay", held, "--timeout", "1")
                assert code == 1 and out == "", (code, out, err)
                assert "still pending after 1 s" in err and f"lightspeed trackpayment {held_hash}" in err, err
                tracked = await ok_json(dir_a, "trackpayment", held_hash, "--timeout", "1")
                assert tracked["status"] == "pending", tracked
                await ok_json(dir_c, "invoice", "settle", preimage.hex())
                tracked = await ok_json(dir_a, "trackpayment", held_hash, "--timeout", "30")
                assert (tracked["status"], tracked["preimage"]) == ("succeeded", preimage.hex()), tracked
                await until(lambda: not any(ch.log.commitment(side).htlcs for node in (a, b, c)
                                            for ch in node.channels.values() for side in Side), timeout=15)

                # What an operator needs of a channel is in the table too, not only in the JSON.
                code, shown, err = await lightspeed(dir_b, "channels", "--table")
                assert code == 0, err
                for field in ("short_channel_id", "active", "spendable_msat", "receivable_msat"):
                    assert field in shown, (field, shown)
                for listed in (await ok_json(dir_b, "channels"))["channels"]:
                    assert listed["short_channel_id"] in shown and f"{listed['spendable_msat']:,}" in shown, shown

                # close by funding outpoint (TXID:INDEX as `channels` shows it): B's channel to C.
                (bc,) = [ch for ch in (await ok_json(dir_b, "channels"))["channels"] if ch["peer_id"] == c.node_id.hex()]
                outpoint = f"{bc['funding_txid']}:{bc['funding_output_index']}"
                closed = await ok_json(dir_b, "close", outpoint)
                assert closed["channel_id"] == bc["channel_id"]
                code, _out, err = await lightspeed(dir_b, "close", outpoint)  # not open any more
                assert code == 1 and f"no open channel {outpoint}" in err, err
                # close by the peer's node id: A's only channel, with B.
                (ab,) = (await ok_json(dir_a, "channels"))["channels"]
                closed = await ok_json(dir_a, "close", b.node_id.hex())
                assert closed["channel_id"] == ab["channel_id"]
                code, _out, err = await lightspeed(dir_a, "close", c.node_id.hex())  # no channel with C
                assert code == 1 and f"no open channel {c.node_id.hex()}" in err, err
        finally:
            for node in (a, b, c):
                await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 150))


def invoice_hash(invoice: str) -> str:
    from lightspeed.invoice import decode

    return decode(invoice).payment_hash.hex()
