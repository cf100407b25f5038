"""Flow 2's own hand-off messages (asyncpay/draft_messages.py) and the LSP's static-invoice table:
round trips, forged signatures, arbitrary bytes raise only DecodeError, slots owned by one client."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.asyncpay import draft_messages as dm
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError
from lightspeed.onion.message import create_reply_path
from lightspeed.store.asyncpay import MAX_STATIC_INVOICES_PER_CLIENT, AsyncPayStore

CLIENT_KEY = bytes(31) + b"\x07"


def a_path() -> object:
    return create_reply_path(os.urandom(32), [pubkey_from_privkey(os.urandom(32))], os.urandom(32))


def test_hold_htlc_paths_round_trip_and_a_changed_byte_breaks_the_signature() -> None:
    request = dm.HoldHtlcPaths.sign(os.urandom(32), [a_path(), a_path()], CLIENT_KEY)  # type: ignore[list-item]
    assert dm.HoldHtlcPaths.from_bytes(request.to_bytes()) == request
    raw = bytearray(request.to_bytes())
    raw[5] ^= 1  # inside the payment hash: the signature no longer covers it
    with pytest.raises(DecodeError, match="signature"):
        dm.HoldHtlcPaths.from_bytes(bytes(raw))


def test_held_paths_are_bounded() -> None:
    one = a_path().to_bytes()  # type: ignore[attr-defined]
    assert len(dm.parse_paths(one * dm.MAX_HELD_PATHS, "paths")) == dm.MAX_HELD_PATHS
    with pytest.raises(DecodeError, match="more than"):
        dm.parse_paths(one * (dm.MAX_HELD_PATHS + 1), "paths")
    with pytest.raises(DecodeError, match="no blinded path"):
        dm.parse_paths(b"", "paths")


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.binary(max_size=600))
def test_decoders_raise_only_decode_error(which: bool, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        (dm.HoldHtlcPaths.from_bytes if which else dm.ServeStaticInvoice.from_bytes)(data)


def test_serve_static_invoice_round_trip_and_missing_fields() -> None:
    request = dm.ServeStaticInvoice(os.urandom(32), b"\x01\x02")
    assert dm.ServeStaticInvoice.from_bytes(request.to_bytes()) == request
    with pytest.raises(DecodeError, match="slot"):
        dm.ServeStaticInvoice.from_bytes(b"")


def test_a_slot_belongs_to_one_client_and_clients_are_bounded(tmp_path: Path) -> None:
    store = AsyncPayStore(tmp_path / "lsp.sqlite")
    b, mallory = pubkey_from_privkey(CLIENT_KEY), pubkey_from_privkey(os.urandom(32))
    slot = os.urandom(32)
    assert store.put_static_invoice(slot, b, b"first", 1)
    assert not store.put_static_invoice(slot, mallory, b"theirs", 2)  # another client's slot: refused
    assert store.put_static_invoice(slot, b, b"second", 3)  # B replaces its own
    for _ in range(MAX_STATIC_INVOICES_PER_CLIENT - 1):
        assert store.put_static_invoice(os.urandom(32), b, b"more", 4)
    assert not store.put_static_invoice(os.urandom(32), b, b"one too many", 5)
    store.close()
    reopened = AsyncPayStore(tmp_path / "lsp.sqlite")
    assert reopened.static_invoice(slot) == (b, b"second")  # survives a restart
    assert reopened.static_invoice(os.urandom(32)) is None
