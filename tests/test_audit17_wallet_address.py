"""A refused address type is a 409 naming the field `type` (found by test_probe_rest_fuzz.py while
auditing issue 17: a wallet made before BIP 39 cannot give p2tr addresses, and the refusal came
without a field)."""

from __future__ import annotations

import asyncio

from lightspeed.chain import RegtestChain
from tests.test_api import AUTH, api, make_node


def test_p2tr_from_a_pre_bip39_wallet_is_refused_naming_the_type_field() -> None:
    async def scenario() -> None:
        node = make_node(RegtestChain(":memory:"), b"a")  # a wallet from a seed, not from BIP 39 words
        async with api(node) as client:
            refused = await client.post("/v1/addresses", json={"type": "p2tr"}, headers=AUTH)
            assert refused.status_code == 409, refused.text  # a valid request this wallet cannot serve
            assert refused.json() == {"error": {
                "field": "type", "reason": "p2tr needs a BIP 39 wallet; this datadir's wallet predates it (p2wpkh only)"}}
            made = await client.post("/v1/addresses", json={"type": "p2wpkh"}, headers=AUTH)
            assert made.status_code == 201 and made.json()["type"] == "p2wpkh"

    asyncio.run(scenario())
