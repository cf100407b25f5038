"""An onion message that arrives right behind a channel update is delivered, not taken for one.

Found with private refunds on a direct channel A - B: A pays B with a return path introduced
by B itself, and B at once asks for a refund invoice over it. B's ``invoice_request`` reaches A
in the same read as B's last ``revoke_and_ack`` of the payment's commitment dance. A applies a
burst of channel updates under one store commit and hands back the message that ended the
burst; that message was then handled as a channel message, so A refused the onion message as
"onion_message for an unknown channel", warned B and hung up. The request was lost, the
connection dropped, and the refund only went through on ``fetch_invoice``'s second attempt,
10 s later. Real nodes on loopback TCP, one regtest chain, SQLite stores.
"""

from __future__ import annotations

import asyncio
import time

from lightspeed.node.node import Node
from lightspeed.node.onion_messenger import PING_TYPE, PONG_TYPE
from lightspeed.node.peer import Peer
from tests.support.network import create_network, until
from tests.test_onionmsg_node import _announce

SAT = 1_000_000
PUSH = 500_000_000  # msat on B's side: the refunds flow back from B to A
ROUNDS = 3


def _peer(node: Node, other: Node) -> Peer:
    peer = node._peers.get(other.node_id)
    assert peer is not None and not peer.session.closed
    return peer


def test_a_refund_asked_right_after_a_payment_on_a_direct_channel_is_answered_at_once() -> None:
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, 2 * SAT, PUSH)])
        _announce(net)
        a, b = net.nodes
        try:
            a_to_b, b_to_a = _peer(a, b), _peer(b, a)
            for round_ in range(1, ROUNDS + 1):
                back = a.return_paths.create()
                assert back.paths is not None and back.paths[0].first_node_id == b.node_id  # B introduces it
                invoice = b.create_invoice(60_000, f"a coffee {round_}")
                await a.pay(invoice, return_path=back)
                assert b.store.return_path(invoice.payment_hash) is not None
                began = time.monotonic()
                # No pause: the request leaves while the payment's commitment dance still runs.
                refund = await b.return_paths.refund(invoice.payment_hash, 10_000, timeout=20, fetch_timeout=30)
                elapsed = time.monotonic() - began
                assert refund.refunded_msat == 10_000
                # The first request was answered: one sent by B, one received by A, one reply.
                assert b.onion_messages.counts["sent"] == round_, b.onion_messages.stats()
                assert a.onion_messages.counts["received"] == round_, a.onion_messages.stats()
                assert b.onion_messages.counts["replies"] == round_
                assert elapsed < 5, f"the refund took {elapsed:.1f} s: its first request was lost"
            # Nobody hung up: the connections the payments started on carried everything.
            assert _peer(a, b) is a_to_b and _peer(b, a) is b_to_a
            assert not a.onion_messages.dropped and not b.onion_messages.dropped
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_ping_sent_as_a_payment_settles_gets_its_pong_and_the_channel_keeps_working() -> None:
    """The same race without refunds: B pings A over a reply path at the moment A's payment to
    B settles; the ping is answered on the first try and the next payment goes through."""

    async def scenario() -> None:
        net = await create_network(2, [(0, 1, 2 * SAT, PUSH)])
        _announce(net)
        a, b = net.nodes
        try:
            a_to_b = _peer(a, b)
            for round_ in range(ROUNDS):
                invoice = b.create_invoice(5_000, f"round {round_}")
                await a.pay(invoice)
                pong = await b.onion_messages.request(a.node_id, [(PING_TYPE, b"%d" % round_)],
                                                      timeout=3, attempts=1)
                assert pong.value(PONG_TYPE) == b"%d" % round_
            assert _peer(a, b) is a_to_b
            await until(lambda: all(a.channel_is_ready(c) for c in a.channels))
            await a.pay(b.create_invoice(5_000, "after"))
        finally:
            await net.stop()

    asyncio.run(scenario())
