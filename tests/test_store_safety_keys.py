"""Channel key ids (issue 11, item 3): every kind of id ever written still derives its own keys.

Three ranges exist in stores: counter indexes (below 2^64), the interim ``random 128 bits ||
counter`` indexes (2^191 to 2^192, written by main for a while), and today's random 255-bit ids
(from 2^255). A channel must load with the very keys it was opened with, whichever wrote it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.chain import RegtestChain
from lightspeed.channel.pair import channel_pair
from lightspeed.channel.serialize import channel_from_record, channel_to_record
from lightspeed.channel.state import LocalSecrets
from lightspeed.errors import UsageError
from lightspeed.node.keys import channel_seed, derive_channel_secrets
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore

_PURPOSES = (b"funding", b"revocation", b"payment", b"delayed_payment", b"htlc", b"per_commitment_seed")


def _as_written(seed: bytes, prefix: bytes) -> LocalSecrets:
    return LocalSecrets(*(hmac.digest(seed, prefix + p, hashlib.sha256) for p in _PURPOSES))


@settings(max_examples=25)
@given(st.integers(0, 2**64 - 1))
def test_interim_random_and_counter_indexes_derive_as_they_were_written(counter: int) -> None:
    seed = channel_seed(b"\x07" * 32)
    interim = ((secrets.randbits(127) | 1 << 127) << 64) | counter  # how main wrote them for a while
    assert derive_channel_secrets(seed, interim) == _as_written(seed, b"lightspeed/channel/" + interim.to_bytes(24, "big"))
    assert derive_channel_secrets(seed, counter) == _as_written(seed, b"lightspeed/channel/" + counter.to_bytes(8, "big"))
    node = Node(b"\x07" * 32, RegtestChain(":memory:"), b"key ids wallet seed 1", store=SqliteStore(":memory:"))
    key_id, fresh = node._new_secrets()
    assert fresh == _as_written(seed, b"lightspeed/channel-id/" + key_id.to_bytes(32, "big"))
    assert fresh != derive_channel_secrets(seed, interim)


def test_an_id_no_version_writes_is_refused_rather_than_given_keys() -> None:
    seed = channel_seed(b"\x07" * 32)
    for key_id in (2**64, 2**100, 2**192, 2**255 - 1):
        with pytest.raises(UsageError, match="not an id any version"):
            derive_channel_secrets(seed, key_id)


def test_a_channel_stored_with_an_interim_index_loads_with_its_own_keys() -> None:
    seed = channel_seed(b"\x08" * 32)
    interim = ((secrets.randbits(127) | 1 << 127) << 64) | 5
    written = _as_written(seed, b"lightspeed/channel/" + interim.to_bytes(24, "big"))  # by the interim version
    alice, _ = channel_pair(1_000_000, funder_secrets=written)
    record = channel_to_record(alice, key_index=interim)
    back = channel_from_record(record, {}, lambda index: derive_channel_secrets(seed, index))
    assert back.secrets == alice.secrets and channel_to_record(back, key_index=interim) == record
