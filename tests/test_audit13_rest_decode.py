"""``POST /v1/offers/decode``: the REST mirror of ``lightspeed offer decode`` (issue 13's OpenAPI mirrors).

Same JSON object as the CLI prints for offers, invoice requests and invoices written by Core
Lightning; a bad string is a 400 naming the BOLT 12 field; a readonly token may call it (it
only computes).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from lightspeed.chain import RegtestChain
from lightspeed.offers import bolt12_to_json
from tests.test_api import api, error, make_node

CLN = json.loads((Path(__file__).parent / "vectors" / "bolt12_interop_cln.json").read_text())["vectors"]
STRINGS = [v["string"] for v in CLN if v["valid"]]


def test_the_rest_decode_is_the_cli_json_and_refuses_bad_strings_naming_the_field() -> None:
    assert {s[:3] for s in STRINGS} == {"lno", "lnr", "lni"}

    async def scenario() -> None:
        node = make_node(RegtestChain(":memory:"), b"decoder")
        async with api(node) as client:
            for text in STRINGS:
                response = await client.post("/v1/offers/decode", json={"string": text})
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                assert body == bolt12_to_json(text)
                assert body["type"] in ("offer", "invoice_request", "invoice") and body["tlv_fields"]
            response = await client.post("/v1/offers/decode", json={"string": "lno1"})
            assert response.status_code == 400
            assert error(response)["field"] == "offer_issuer_id"
            response = await client.post("/v1/offers/decode", json={"string": "lnbc1qqqq"})
            assert response.status_code == 400 and "unknown prefix" in error(response)["reason"]
            response = await client.post("/v1/offers/decode", json={})
            assert response.status_code == 400 and error(response)["field"] == "string"
            document = (await client.get("/openapi.json")).json()
            operation = document["paths"]["/v1/offers/decode"]["post"]
            assert operation["operationId"] == "decodeOffer"
        await node.stop()

    asyncio.run(scenario())
