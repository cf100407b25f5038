"""Scoped API credentials (issue 17): the token format, the store, and the scope of every route.

Real pieces throughout: a real root key and SQLite store in a temporary directory, the real app
(httpx over ASGI) on a real node.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightspeed.api.app import ENDPOINTS, create_app
from lightspeed.api.credentials import (
    KEY_FILE,
    MAX_TOKEN_LENGTH,
    PREFIX,
    SCOPES,
    STORE_FILE,
    Caveats,
    Credentials,
    TokenRejected,
    scope_allows,
)
from lightspeed.api.handlers import ApiContext
from lightspeed.api.openapi import openapi_document
from lightspeed.api.scopes import REQUIRED_SCOPE
from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import sha256
from lightspeed.node.node import Node

ADMIN_TOKEN = "a" * 32
NOW = 1_760_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- the token and its store ----------------------------------------------------------------------

def test_a_token_carries_its_caveats_and_the_store_no_secret(tmp_path: Path) -> None:
    creds = Credentials(tmp_path)
    token, record = creds.create("pay", NOW, budget_msat=5_000, expires_in_s=3600, label="bot & co/1")
    assert token.startswith(f"{PREFIX}.") and record.scope == "pay" and record.budget_msat == 5_000
    credential = creds.verify(token, NOW)
    assert (credential.scope, credential.token_id, credential.budget_msat) == ("pay", record.token_id, 5_000)
    assert creds.records()[0].label == "bot & co/1"
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / STORE_FILE).st_mode) == 0o600
    mac = token.rsplit(".", 1)[1]
    for name in os.listdir(tmp_path):  # the token (its MAC) is nowhere on disk: only the root key is
        assert mac.encode() not in (tmp_path / name).read_bytes()
    creds.close()


def test_expiry_is_checked_at_its_boundary(tmp_path: Path) -> None:
    creds = Credentials(tmp_path)
    token, _ = creds.create("readonly", NOW, expires_in_s=60)
    assert creds.verify(token, NOW + 59).scope == "readonly"
    with pytest.raises(TokenRejected, match="expired"):
        creds.verify(token, NOW + 60)


def test_changing_any_caveat_breaks_the_signature(tmp_path: Path) -> None:
    creds = Credentials(tmp_path)
    token, record = creds.create("readonly", NOW, label="viewer")
    _prefix, _caveats, mac = token.split(".")
    widened = Caveats(record.token_id, "admin", label="viewer").encode()
    with pytest.raises(TokenRejected, match="signature"):
        creds.verify(f"{PREFIX}.{_b64(widened.encode())}.{mac}", NOW)
    (tmp_path / "other").mkdir()
    other = Credentials(tmp_path / "other")  # another node's root key
    with pytest.raises(TokenRejected, match="signature"):
        other.verify(token, NOW)


def test_revocation_survives_reopening_the_store(tmp_path: Path) -> None:
    creds = Credentials(tmp_path)
    token, record = creds.create("invoice", NOW)
    kept, _ = creds.create("invoice", NOW)
    assert creds.revoke(record.token_id, NOW + 1) is not None
    creds.close()
    reopened = Credentials(tmp_path)  # as a restarted daemon does
    with pytest.raises(TokenRejected, match="revoked"):
        reopened.verify(token, NOW + 2)
    assert reopened.verify(kept, NOW + 2).scope == "invoice"
    assert reopened.revoke("0" * 16, NOW) is None


def test_a_token_whose_store_row_is_gone_is_refused(tmp_path: Path) -> None:
    creds = Credentials(tmp_path)
    token, _ = creds.create("readonly", NOW)
    creds.close()
    (tmp_path / STORE_FILE).unlink()
    with pytest.raises(TokenRejected, match="unknown"):
        Credentials(tmp_path).verify(token, NOW)


def test_budget_reservations_stop_exactly_at_the_budget_and_persist(tmp_path: Path) -> None:
    creds = Credentials(tmp_path)
    token, _ = creds.create("pay", NOW, budget_msat=10_000)
    credential = creds.verify(token, NOW)
    assert creds.reserve(credential, 6_000)
    assert not creds.reserve(credential, 4_001)  # 10,001 > 10,000
    assert creds.reserve(credential, 4_000)  # exactly the budget
    assert not creds.reserve(credential, 1)
    creds.refund(credential, 1_500)
    creds.close()
    reopened = Credentials(tmp_path)
    assert reopened.remaining(credential) == 1_500
    assert reopened.records()[0].spent_msat == 8_500


def test_pay_tokens_need_a_budget_and_others_take_none(tmp_path: Path) -> None:
    creds = Credentials(tmp_path)
    with pytest.raises(Exception, match="budget_msat: a pay token needs a budget"):
        creds.create("pay", NOW)
    with pytest.raises(Exception, match="only pay tokens"):
        creds.create("readonly", NOW, budget_msat=1)


def test_scopes_are_levels() -> None:
    assert [s for s in SCOPES if scope_allows(s, "invoice")] == ["invoice", "pay", "admin"]
    assert [s for s in SCOPES if scope_allows("invoice", s)] == ["readonly", "invoice"]


_B64_TEXT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=80)


@st.composite
def hostile_tokens(draw: st.DrawFn) -> str:
    how = draw(st.integers(0, 4))
    if how == 0:
        return draw(st.text(max_size=200))
    if how == 1:
        return f"{PREFIX}.{draw(_B64_TEXT)}.{draw(_B64_TEXT)}"
    if how == 2:  # a well-formed shell around any caveat text and a MAC of the right length
        caveats = draw(st.one_of(st.text(max_size=80), st.binary(max_size=80).map(lambda b: b.decode("latin-1"))))
        return f"{PREFIX}.{_b64(caveats.encode('utf-8', 'surrogatepass'))}.{_b64(draw(st.binary(min_size=32, max_size=32)))}"
    if how == 3:
        fields = draw(st.lists(st.sampled_from(["id=0123456789abcdef", "scope=admin", "scope=root", "budget_msat=1",
                                                "budget_msat=-1", "expires_at=99999999999999999999999",
                                                "label=%ff", "label=%", "x=1", "", "=", "id="]), max_size=6))
        return f"{PREFIX}.{_b64('&'.join(fields).encode())}.{_b64(bytes(32))}"
    return draw(st.sampled_from([PREFIX, f"{PREFIX}..", f"{PREFIX}.a.b.c", f"{PREFIX}.====.====",
                                 "x" * (MAX_TOKEN_LENGTH + 1), f"{PREFIX}.\u00e9.a"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=hostile_tokens())
def test_the_token_parser_refuses_anything_forged_with_token_rejected(tmp_path: Path, token: str) -> None:
    creds = Credentials(tmp_path)
    try:
        with pytest.raises(TokenRejected):
            creds.verify(token, NOW)
    finally:
        creds.close()


# -- over HTTP: 401 for bad tokens, 403 for too small a scope, every route ------------------------

def _client(ctx: ApiContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx, ADMIN_TOKEN)), base_url="http://node")


def _context(tmp_path: Path) -> tuple[Node, ApiContext]:
    node = Node(sha256(b"scopes node"), RegtestChain(":memory:"), sha256(b"scopes wallet"))
    ctx = ApiContext(node, listen="127.0.0.1:0", open_timeout_s=1, credentials=Credentials(tmp_path),
                     clock=lambda: NOW)
    ctx.request_stop = lambda: None
    return node, ctx


def _run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())


def test_a_hostile_bearer_header_is_always_a_clean_401(tmp_path: Path) -> None:
    _node, ctx = _context(tmp_path)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(token=hostile_tokens())
    def probe(token: str) -> None:
        async def scenario() -> None:
            async with _client(ctx) as client:
                header = f"Bearer {token}".encode("utf-8", "surrogatepass")  # any bytes, as a raw client sends
                response = await client.get("/v1/getinfo", headers={"Authorization": header})
                assert response.status_code == 401, response.text
                assert set(response.json()) == {"error"} and response.json()["error"]["reason"]
                assert response.headers["www-authenticate"] == "Bearer"

        _run(scenario)

    probe()


def _operations() -> list[tuple[str, str, str]]:
    document = openapi_document(ENDPOINTS)
    return [(method.upper(), path, operation["operationId"]) for path, methods in document["paths"].items()
            for method, operation in methods.items()]


def test_every_route_in_the_openapi_document_declares_a_scope() -> None:
    operations = {op for _m, _p, op in _operations()}
    assert operations | {"openapi"} == set(REQUIRED_SCOPE)
    assert {REQUIRED_SCOPE[op] for op in ("createToken", "listTokens", "revokeToken", "openChannel", "stop",
                                          "signMessage", "keysend", "payBlinded", "payOffer", "createRefund")} == {"admin"}
    assert REQUIRED_SCOPE["payInvoice"] == "pay" and REQUIRED_SCOPE["createInvoice"] == "invoice"


def _url(path: str) -> str:
    values = {"channel_id": "00" * 32, "payment_hash": "00" * 32, "node_id": "02" + "11" * 32,
              "short_channel_id": "1x2x3", "token_id": "0" * 16}
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def test_every_route_refuses_a_lower_scope_with_403_and_lets_its_own_scope_through(tmp_path: Path) -> None:
    node, ctx = _context(tmp_path)
    assert ctx.credentials is not None
    tokens = {scope: ctx.credentials.create(scope, NOW, budget_msat=1_000 if scope == "pay" else None)[0]
              for scope in SCOPES}
    operations = [*_operations(), ("GET", "/openapi.json", "openapi")]
    streams = {"events"}  # an endless stream: its headers are checked over a real server (test_dashboard17_*)

    async def scenario() -> None:
        async with _client(ctx) as client:
            for method, path, operation in operations:
                required = REQUIRED_SCOPE[operation]
                for scope in SCOPES:
                    if scope_allows(scope, required) and (operation in streams or scope != required):
                        continue
                    response = await client.request(method, _url(path),
                                                    headers={"Authorization": f"Bearer {tokens[scope]}"})
                    what = f"{method} {path} with {scope}: {response.status_code} {response.text[:200]}"
                    if scope_allows(scope, required):  # exactly the scope it needs: past the auth layer
                        assert response.status_code not in (401, 403, 500), what
                    else:
                        assert response.status_code == 403, what
                        error = response.json()["error"]
                        assert set(response.json()) == {"error"}, what
                        assert f"this route needs {required}" in error["reason"], what
            # The admin token of the datadir keeps working everywhere (backwards compatible).
            for path in ("/v1/tokens", "/v1/getinfo", "/openapi.json"):
                response = await client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                assert response.status_code == 200, response.text
        await node.stop()

    _run(scenario)


def test_token_routes_create_list_and_revoke(tmp_path: Path) -> None:
    node, ctx = _context(tmp_path)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def scenario() -> None:
        async with _client(ctx) as client:
            made = await client.post("/v1/tokens", headers=admin, json={"scope": "readonly", "label": "viewer",
                                                                       "expires_in_s": 3600})
            assert made.status_code == 201, made.text
            token = made.json()["token"]
            assert made.json()["expires_at"] == NOW + 3600
            viewer = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/v1/getinfo", headers=viewer)).status_code == 200
            listed = (await client.get("/v1/tokens", headers=admin)).json()["tokens"]
            assert [(t["id"], t["label"], t["revoked_at"]) for t in listed] == [(made.json()["id"], "viewer", None)]
            assert all("token" not in t for t in listed)
            refused = await client.post("/v1/tokens", headers=admin, json={"scope": "pay"})
            assert refused.status_code == 400 and refused.json()["error"]["field"] == "budget_msat"
            revoked = await client.post(f"/v1/tokens/{made.json()['id']}/revoke", headers=admin)
            assert revoked.status_code == 200 and revoked.json()["revoked_at"] == NOW
            after = await client.get("/v1/getinfo", headers=viewer)
            assert after.status_code == 401 and "revoked" in after.json()["error"]["reason"]
            missing = await client.post(f"/v1/tokens/{'1' * 16}/revoke", headers=admin)
            assert missing.status_code == 404 and missing.json()["error"]["field"] == "token_id"
        await node.stop()

    _run(scenario)


def test_an_unreadable_credential_store_refuses_scoped_tokens_with_a_clean_503(tmp_path: Path) -> None:
    node, ctx = _context(tmp_path)
    assert ctx.credentials is not None
    token, _ = ctx.credentials.create("readonly", NOW)
    ctx.credentials.close()  # as a store whose file went away under the daemon

    async def scenario() -> None:
        async with _client(ctx) as client:
            response = await client.get("/v1/getinfo", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 503, response.text
            assert "credential store" in response.json()["error"]["reason"]
            admin = await client.get("/v1/getinfo", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert admin.status_code == 200  # the admin token needs no store
        await node.stop()

    _run(scenario)
