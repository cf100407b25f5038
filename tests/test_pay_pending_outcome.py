"""A payment still pending at its timeout that fails later: the failure goes to the store and the
events, and nothing is left unretrieved (asyncio's "Future exception was never retrieved", which
under pytest's assertion rewriting once ended a test process with a SystemError)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os

import pytest

from lightspeed.crypto.hashes import sha256
from lightspeed.errors import PaymentError
from tests.support.network import create_network, until

SAT = 1_000_000


def test_a_pending_payment_that_fails_later_leaves_no_unretrieved_exception(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, SAT, 0)])
        alice, bob = net.nodes
        preimage = os.urandom(32)
        invoice = bob.create_hold_invoice(sha256(preimage), 10_000_000, "held")
        with pytest.raises(PaymentError, match="still pending"):
            await alice.pay(invoice, timeout=0.5)
        await bob.cancel_hold(invoice.payment_hash)
        await until(lambda: getattr(alice.store.payment(invoice.payment_hash), "status", "") == "failed")
        gc.collect()
        await asyncio.sleep(0)
        await net.stop()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(scenario())
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
