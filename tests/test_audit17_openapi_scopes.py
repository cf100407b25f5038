"""Issue 17 audit: the served OpenAPI document names the scope every route needs.

A client generated from the document (or a person reading it) must learn that `POST /v1/payments`
needs a pay token before a 403 tells it; the scope table (api/scopes.py) is what the server
enforces, so the document must carry exactly that table.
"""

from __future__ import annotations

import asyncio

from lightspeed.api.credentials import SCOPES
from lightspeed.api.scopes import REQUIRED_SCOPE
from lightspeed.chain import RegtestChain
from tests.test_api import AUTH, api, make_node


def test_every_operation_of_the_served_document_names_its_scope() -> None:
    async def scenario() -> dict[str, dict[str, object]]:
        node = make_node(RegtestChain(":memory:"), b"a")
        async with api(node) as client:
            response = await client.get("/openapi.json", headers=AUTH)
        assert response.status_code == 200, response.text
        paths: dict[str, dict[str, object]] = response.json()["paths"]
        return {str(op["operationId"]): op for ops in paths.values() for op in ops.values()  # type: ignore[index]
                if isinstance(op, dict)}

    operations = asyncio.run(scenario())
    assert set(operations) | {"openapi"} == set(REQUIRED_SCOPE)
    for operation_id, operation in operations.items():
        scope = REQUIRED_SCOPE[operation_id]
        assert operation["x-required-scope"] == scope, operation_id
        assert operation["security"] == [{"bearer": [scope]}], operation_id
        article = "an" if scope in ("invoice", "admin") else "a"
        assert str(operation["description"]).startswith(f"Needs {article} {scope} token"), operation_id
    # The levels are spelled out where a lower token is not enough.
    assert operations["getinfo"]["description"] == "Needs a readonly token (or invoice, pay, admin: scopes are levels)."
    assert operations["payInvoice"]["x-required-scope"] == "pay"
    assert operations["payInvoice"]["description"] == "Needs a pay token (or admin: scopes are levels)."
    assert operations["createInvoice"]["x-required-scope"] == "invoice"
    assert operations["stop"]["description"] == "Needs an admin token."
    assert {op["x-required-scope"] for op in operations.values()} == set(SCOPES)
