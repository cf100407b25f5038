"""``lsp_register`` (asyncpay/register.py): signed by the client, fresh within 600 s, fuzzed decoder."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightspeed.asyncpay.register import (
    MAX_CLOCK_SKEW_S,
    LspRegisterRequest,
    parse_registered_reply,
)
from lightspeed.errors import DecodeError

KEY = hashlib.sha256(b"wire14 client").digest()
OTHER = hashlib.sha256(b"wire14 someone else").digest()
NOW = 1_800_000_000


def test_round_trip_with_and_without_webhook() -> None:
    for url in ("https://push.example/bob", None):
        request = LspRegisterRequest.sign(KEY, NOW, url)
        decoded = LspRegisterRequest.from_bytes(request.to_bytes(), now=NOW)
        assert decoded == request and decoded.webhook_url == url


def test_timestamp_window_boundary() -> None:
    data = LspRegisterRequest.sign(KEY, NOW, None).to_bytes()
    for delta in (MAX_CLOCK_SKEW_S, -MAX_CLOCK_SKEW_S):
        LspRegisterRequest.from_bytes(data, now=NOW + delta)  # 600 s ok
    for delta in (MAX_CLOCK_SKEW_S + 1, -MAX_CLOCK_SKEW_S - 1):
        with pytest.raises(DecodeError, match="timestamp"):  # 601 s: a replay, refused
            LspRegisterRequest.from_bytes(data, now=NOW + delta)


def test_someone_else_cannot_register_a_webhook_for_the_client() -> None:
    genuine = LspRegisterRequest.sign(KEY, NOW, "https://push.example/bob")
    forged = LspRegisterRequest.sign(OTHER, NOW, "https://evil.example/")
    tampered = LspRegisterRequest(genuine.client_id, NOW, "https://evil.example/", genuine.signature)
    spliced = LspRegisterRequest(genuine.client_id, NOW, forged.webhook_url, forged.signature)
    for request in (tampered, spliced):
        with pytest.raises(DecodeError, match="signature"):
            LspRegisterRequest.from_bytes(request.to_bytes(), now=NOW)


def test_reply_needs_limits() -> None:
    assert parse_registered_reply(b'{"limits": {"max_hold_seconds": 1}}')["limits"] == {"max_hold_seconds": 1}
    for bad in (b"", b"[]", b'{"limits": 3}', b"\xff"):
        with pytest.raises(DecodeError):
            parse_registered_reply(bad)


@given(st.binary(max_size=300))
def test_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else escapes and fails the test
        LspRegisterRequest.from_bytes(data, now=NOW)
