"""REST routes for scoped credentials: list, create, revoke (admin only, see api/scopes.py)."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from lightspeed.api.credentials import MAX_BUDGET_MSAT, MAX_LABEL_BYTES, SCOPES, Credentials
from lightspeed.api.handlers import ApiContext, ApiError
from lightspeed.api.openapi import Endpoint
from lightspeed.api.schema import Schema, integer, obj, string
from lightspeed.errors import UsageError

MAX_EXPIRY_S = 10 * 365 * 86_400
TOKEN_ID: Schema = {"type": "string", "pattern": "^[0-9a-f]{16}$", "description": "a token id: 16 hex digits"}
_TOKEN: Schema = {"type": "object", "properties": {
    "id": {"type": "string"}, "scope": {"enum": list(SCOPES)}, "label": {"type": "string"},
    "budget_msat": {"type": ["integer", "null"]}, "spent_msat": {"type": "integer"},
    "remaining_msat": {"type": ["integer", "null"]}, "expires_at": {"type": ["integer", "null"]},
    "created_at": {"type": "integer"}, "revoked_at": {"type": ["integer", "null"]}}}


def _store(ctx: ApiContext) -> Credentials:
    if ctx.credentials is None:
        raise ApiError(409, "this API has no credential store (only its admin token): scoped tokens need a "
                            "daemon started with a datadir")
    return ctx.credentials


async def list_tokens(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    return 200, {"tokens": [r.json() for r in _store(ctx).records()]}


async def create_token(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    try:
        token, record = _store(ctx).create(body["scope"], ctx.now(), body.get("budget_msat"),
                                           body.get("expires_in_s"), body.get("label", ""))
    except UsageError as exc:
        field, _, reason = str(exc).partition(": ")
        raise ApiError(400, reason or str(exc), field if reason else None) from None
    return 201, {"token": token, **record.json()}


async def revoke_token(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    token_id = request.path_params["token_id"]
    record = _store(ctx).revoke(token_id, ctx.now())
    if record is None:
        raise ApiError(404, f"no token {token_id}", "token_id")
    return 200, record.json()


def endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint("GET", "/v1/tokens", "listTokens", "Scoped API tokens issued (never the token strings)",
                 list_tokens, {"type": "object", "properties": {"tokens": {"type": "array", "items": _TOKEN}}}),
        Endpoint("POST", "/v1/tokens", "createToken",
                 "Issue a scoped token: readonly, invoice, pay (with a budget, fees included) or admin; the "
                 "token string is in this answer only", create_token,
                 {**_TOKEN, "properties": {**_TOKEN["properties"], "token": {"type": "string"}}}, status=201,
                 body=obj({"scope": {"enum": list(SCOPES), "description": "what the token may do"},
                           "budget_msat": integer("pay tokens: the most they may ever spend", 1, MAX_BUDGET_MSAT),
                           "expires_in_s": integer("seconds until the token expires", 1, MAX_EXPIRY_S),
                           "label": string("a name to recognise it by", 0, max_utf8_bytes=MAX_LABEL_BYTES)},
                          ["scope"])),
        Endpoint("POST", "/v1/tokens/{token_id}/revoke", "revokeToken",
                 "Revoke a token for good (kept across restarts)", revoke_token, _TOKEN,
                 path_params=(("token_id", TOKEN_ID),)),
    )


_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhdw]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> int:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` in seconds; ValueError says why."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: give a whole number with s, m, h, d or w (e.g. 1h)")
    return int(match[1]) * _UNIT_S[match[2]]
