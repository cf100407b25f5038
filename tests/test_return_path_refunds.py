"""Private refunds through a blinded return path sent with a BOLT 11 payment (issue 15, part 3).

Real nodes on loopback TCP with SQLite stores, in a line A - B - C - D: A pays D's invoice and
attaches a return path (an offer over a blinded path introduced by A's peer B, signed by a
fresh key); D refunds parts of it through that path. D must never learn A's node id: not in its
store file, its log, or its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from pathlib import Path

import pytest

from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, PaymentError, UsageError
from lightspeed.invoice import build_invoice
from lightspeed.invoice.decode import decode
from lightspeed.node.return_paths import RETURN_PATH_TLV, RefundError
from lightspeed.offers import build_offer
from lightspeed.offers.strings import decode_string
from lightspeed.store import PaymentRecord, SqliteStore
from lightspeed.store.sqlite import SCHEMA_VERSION
from tests.support.network import Network, create_network, restart_from_disk, until
from tests.test_api import api, error
from tests.test_onionmsg_node import _announce

SAT = 1_000_000
PUSH = 500_000_000  # msat on the fundee's side: refunds flow back along the line


async def _line(datadir: Path | None = None) -> Network:
    net = await create_network(4, [(0, 1, 2 * SAT, PUSH), (1, 2, 2 * SAT, PUSH), (2, 3, 2 * SAT, PUSH)], datadir=datadir)
    _announce(net)
    return net


def _bolt12_streams(files: list[bytes]) -> list[bytes]:
    """The TLV streams of every BOLT 12 string (lno/lni/lnr, bech32: a node id in one is not
    visible as bytes or hex) in the files."""
    found = {m.decode() for blob in files for m in re.findall(rb"ln[oir]1[02-9ac-hj-np-z]{20,}", blob)}
    streams = []
    for text in found:
        with contextlib.suppress(DecodeError):  # a fragment cut by a page boundary
            streams.append(decode_string(text)[1])
    return streams


def _events(node: object) -> list[str]:
    bus = node.events  # type: ignore[attr-defined]
    seen = []
    while not bus.empty():
        seen.append(repr(bus.get_nowait()))
    return seen


def test_refunds_in_parts_reach_the_payer_and_the_payee_never_learns_who_it_is(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        net = await _line(tmp_path)
        a, d = net.nodes[0], net.nodes[3]
        try:
            back = a.return_paths.create()
            assert back.issuer_id != a.node_id and back.paths is not None
            assert back.paths[0].first_node_id == net.nodes[1].node_id  # introduced by A's peer
            invoice = d.create_invoice(60_000, "a coffee")
            await a.pay(invoice, return_path=back)
            await until(lambda: d.store.return_path(invoice.payment_hash) is not None)
            before = sum(p.amount_msat for p in a.store.invoices() if p.status == "paid")

            first = await d.return_paths.refund(invoice.payment_hash, 25_000, timeout=20)
            assert first.refunded_msat == 25_000 and sha256(first.preimage) != invoice.payment_hash
            d = await restart_from_disk(net, 3)  # the running total is in the store
            a = await restart_from_disk(net, 0)  # A keeps nothing for the path: it still answers over it
            await until(lambda: all(n.channel_is_ready(c) for n in (a, d) for c in n.channels), 20)
            with pytest.raises(RefundError, match=r"amount_msat: 40000 msat is more than the 35000 msat left"):
                await d.return_paths.refund(invoice.payment_hash, 40_000)
            second = await d.return_paths.refund(invoice.payment_hash, 35_000, timeout=20)
            assert second.refunded_msat == 60_000 == second.received_msat
            with pytest.raises(RefundError, match="amount_msat: 1 msat is more than the 0 msat left"):
                await d.return_paths.refund(invoice.payment_hash, 1)

            # The refunds arrived at A: two paid invoices of A's, 25,000 and 35,000 msat.
            await until(lambda: sum(p.amount_msat for p in a.store.invoices() if p.status == "paid")
                        == before + 60_000)
            paid_by_d = sorted(p.amount_msat for p in d.store.payments() if p.status == "succeeded")
            assert paid_by_d == [25_000, 35_000]

            # D never learns A's node id: not in its store file, its events, its log lines.
            secret_ids = (a.node_id, a.node_id.hex().encode())
            files = [f.read_bytes() for f in (tmp_path / "node3").rglob("*") if f.is_file()]
            assert files and not any(i in blob for blob in files for i in secret_ids)
            stored = d.store.return_path(invoice.payment_hash)
            assert stored is not None
            # The stored return path and the refund invoices, decoded: whatever the raw scan finds (a
            # string may straddle two pages of the file), plus the return path as the store gives it.
            bolt12 = _bolt12_streams([*files, stored.encode()])
            assert bolt12 and not any(a.node_id in stream for stream in bolt12)
            assert not any(a.node_id.hex() in e for e in _events(d))
            d_logs = [r.getMessage() for r in caplog.records if r.name.startswith("lightspeed.return_paths")]
            assert not any(a.node_id.hex() in line for line in d_logs)
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_no_return_path_an_expired_one_and_a_malformed_one_give_clear_errors(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        net = await _line()
        a, d = net.nodes[0], net.nodes[3]
        try:
            plain = d.create_invoice(10_000, "no way back")
            await a.pay(plain)
            with pytest.raises(RefundError, match="payment_hash: the payment carried no return path"):
                await d.return_paths.refund(plain.payment_hash, 1_000)
            with pytest.raises(RefundError, match="payment_hash: no payment was received"):
                await d.return_paths.refund(bytes(32), 1_000)

            short = a.return_paths.create(expiry=2)
            expiring = d.create_invoice(10_000, "soon gone")
            await a.pay(expiring, return_path=short)
            await until(lambda: d.store.return_path(expiring.payment_hash) is not None)
            await asyncio.sleep(3.1)
            with pytest.raises(RefundError, match="return_path: expired at"):
                await d.return_paths.refund(expiring.payment_hash, 1_000)
            with pytest.raises(RefundError, match="amount_msat: must be positive"):
                await d.return_paths.refund(expiring.payment_hash, 0)

            # Not blinded (names A directly): the payment is accepted, the path ignored and logged
            # without A's id.
            bare = build_offer(issuer_id=a.node_id, description="x", absolute_expiry=int(time.time()) + 60,
                               chains=[a.network.chain_hash])
            odd = d.create_invoice(10_000, "bad path")
            await a.pay(odd, return_path=bare)
            assert d.store.invoice(odd.payment_hash).status == "paid"  # type: ignore[union-attr]
            assert d.store.return_path(odd.payment_hash) is None
            lines = [r.getMessage() for r in caplog.records if r.name == "lightspeed.return_paths"]
            assert any(odd.payment_hash.hex() in line and "offer_paths" in line for line in lines)
            assert not any(a.node_id.hex() in line for line in lines)
            assert RETURN_PATH_TLV % 2 == 1 and RETURN_PATH_TLV >= 65_537

            # A payment to a hash D never issued is refused, and its return path is not kept.
            stranger = build_invoice(network=d.network, amount_msat=10_000, payment_hash=os.urandom(32),
                                     payment_secret=os.urandom(32), timestamp=int(time.time()),
                                     description="not D's").sign(d.privkey)
            with pytest.raises(PaymentError):
                await a.pay(decode(stranger.encode()), timeout=10, return_path=a.return_paths.create())
            assert d.store.return_path(stranger.payment_hash) is None
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_payer_without_a_peer_cannot_make_a_return_path() -> None:
    async def scenario() -> None:
        net = await create_network(1, [])
        try:
            with pytest.raises(UsageError, match="return_path: no connected peer"):
                net.nodes[0].return_paths.create()
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_version_2_store_gains_the_return_paths_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    store = SqliteStore(path)
    store._db.execute("DROP TABLE return_paths")
    store._db.execute("DROP TABLE return_refunds")
    store._db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    store.close()
    reopened = SqliteStore(path)
    with reopened.transaction():
        reopened.put_return_path(bytes(32), "lno1x")
        reopened.put_return_refund(bytes(32), b"r" * 32, 5)
    version = reopened._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION)  # 3 added the tables; later versions keep them
    assert reopened.return_path(bytes(32)) == "lno1x"
    assert reopened.return_refunds(bytes(32)) == [(b"r" * 32, 5)]
    reopened.close()


def test_rest_pays_with_a_return_path_and_refunds_through_it_concurrent_requests_never_exceed_the_payment(
        ) -> None:
    async def scenario() -> None:
        net = await _line()
        a, d = net.nodes[0], net.nodes[3]
        try:
            invoice = d.create_invoice(60_000, "a tea")
            plain = d.create_invoice(5_000, "a biscuit")
            async with api(a) as payer, api(d) as payee:
                paid = await payer.post("/v1/payments", json={"invoice": invoice.encode(), "return_path": True,
                                                              "timeout_s": 20})
                assert paid.status_code == 200, paid.text
                assert (await payer.post("/v1/payments", json={"invoice": plain.encode()})).status_code == 200
                await until(lambda: d.store.return_path(invoice.payment_hash) is not None)
                body = {"payment_hash": invoice.payment_hash.hex(), "amount_msat": 40_000, "timeout_s": 20}
                # Two at once, 80,000 msat together for a 60,000 msat payment: one is refused.
                first, second = await asyncio.gather(payee.post("/v1/refunds/send", json=body),
                                                     payee.post("/v1/refunds/send", json=body))
                assert sorted((first.status_code, second.status_code)) == [200, 409]
                ok, refused = (first, second) if first.status_code == 200 else (second, first)
                assert ok.json()["refunded_msat"] == 40_000 and ok.json()["received_msat"] == 60_000
                assert error(refused) == {"field": "amount_msat", "reason": "40000 msat is more than the 20000 msat "
                                          "left to refund (received 60000, refunded 40000)"}
                rest = await payee.post("/v1/refunds/send", json={**body, "amount_msat": 20_000})
                assert rest.status_code == 200 and rest.json()["refunded_msat"] == 60_000
                none = await payee.post("/v1/refunds/send", json={**body, "payment_hash": plain.payment_hash.hex()})
                assert none.status_code == 409 and error(none)["field"] == "payment_hash"
                assert "no return path" in error(none)["reason"]
                unknown = await payee.post("/v1/refunds/send", json={**body, "payment_hash": "00" * 32})
                assert unknown.status_code == 404 and error(unknown)["field"] == "payment_hash"
            paid_by_d = sorted(p.amount_msat for p in d.store.payments() if p.status == "succeeded")
            assert paid_by_d == [20_000, 40_000]
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_refund_part_counts_while_its_payment_may_settle_and_not_once_it_failed_or_never_started() -> None:
    async def scenario() -> None:
        net = await create_network(1, [])
        node = net.nodes[0]
        store = node.store
        try:
            paid = bytes([1]) * 32
            parts = {"never started": bytes([2]) * 32, "pending": bytes([3]) * 32,
                     "succeeded": bytes([4]) * 32, "failed": bytes([5]) * 32}
            with store.transaction():
                for name, refund_hash in parts.items():
                    store.put_return_refund(paid, refund_hash, {"never started": 1, "pending": 10,
                                                                "succeeded": 100, "failed": 1000}[name])
                    if name != "never started":
                        store.put_payment(PaymentRecord(refund_hash, 1, name))
            # A stop between committing a part and its first HTLC: nothing was sent, nothing counts.
            assert node.return_paths.refunded_msat(paid) == 110
            node.return_paths._in_flight.add(parts["never started"])  # being started right now: it counts
            assert node.return_paths.refunded_msat(paid) == 111
        finally:
            await net.stop()

    asyncio.run(scenario())
