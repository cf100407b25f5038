"""Issue 18: the CPU cuts on the payment path keep what is stored byte for byte.

The HTLC log keys its dicts by Side thousands of times per payment (C-level hash now),
and every store write of a channel encoded its whole journal again (now each message
once). Neither may change a byte of what is written or how a channel resumes.
"""

from __future__ import annotations

import os

import pytest

from lightspeed.channel import Channel, serialize
from lightspeed.channel.htlc_log import Removal, Side
from lightspeed.channel.pair import channel_pair
from lightspeed.channel.serialize import channel_from_record, channel_to_record
from lightspeed.codec.message_base import WireMessage
from lightspeed.crypto.hashes import sha256


def _add_and_sign(alice: Channel, bob: Channel) -> None:
    """Alice offers an HTLC and signs; Bob takes both; Alice's journal now holds two messages."""
    preimage = os.urandom(32)
    bob.receive(alice.add_htlc(50_000, sha256(preimage), 800))
    bob.receive(alice.sign())


def test_side_and_removal_hash_by_identity_and_still_work_as_keys() -> None:
    assert hash(Side.LOCAL) == object.__hash__(Side.LOCAL)
    assert hash(Removal.FAIL) == object.__hash__(Removal.FAIL)
    table = {Side.LOCAL: 1, Side.REMOTE: 2}
    assert table[Side("local")] == 1 and table[Side["REMOTE"]] == 2
    assert Side.LOCAL.other is Side.REMOTE and len({Side.LOCAL, Side.LOCAL, Side.REMOTE}) == 2


def test_commitment_lists_local_offers_first_then_remote_by_id() -> None:
    alice, bob = channel_pair(10_000_000, 5_000_000_000, anchors=True, max_accepted_htlcs=483)
    for _ in range(3):
        bob.receive(alice.add_htlc(60_000, sha256(os.urandom(32)), 800))
        alice.receive(bob.add_htlc(70_000, sha256(os.urandom(32)), 800))
    htlcs = alice.log.commitment(Side.LOCAL, pending=True).htlcs
    assert [(h.offerer, h.htlc_id) for h in htlcs] == [
        (Side.LOCAL, 0), (Side.LOCAL, 1), (Side.LOCAL, 2), (Side.REMOTE, 0), (Side.REMOTE, 1), (Side.REMOTE, 2)]


@pytest.mark.parametrize("anchors", [True, False])
def test_journal_is_encoded_once_per_message_and_the_record_is_unchanged(
        anchors: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = channel_pair(10_000_000, 5_000_000_000, anchors=anchors, max_accepted_htlcs=483)
    _add_and_sign(alice, bob)
    encoded: list[str] = []
    real_wire = serialize._wire

    def counting_wire(message: WireMessage) -> str:  # the real encoder, counted
        encoded.append(message.NAME)
        return real_wire(message)

    monkeypatch.setattr(serialize, "_wire", counting_wire)
    first = channel_to_record(alice)
    assert sorted(encoded) == ["commitment_signed", "update_add_htlc"]
    second = channel_to_record(alice)
    assert second == first
    assert len(encoded) == 2  # the second write re-encoded nothing
    # A channel loaded from the record (no cache) writes exactly the same bytes.
    assert channel_to_record(channel_from_record(first)) == first
    # A new message is encoded on its own; a message dropped from the journal leaves the cache.
    replies, _ = bob.receive(alice.add_htlc(40_000, sha256(os.urandom(32)), 800))
    assert replies == []
    del encoded[:]
    third = channel_to_record(alice)
    assert encoded == ["update_add_htlc"]
    assert channel_to_record(channel_from_record(third)) == third
    alice.disconnected()  # drops the unsigned add from the journal
    assert len(alice._journal_hex) == 3
    channel_to_record(alice)
    assert set(alice._journal_hex) == {id(m) for m in alice._journal}
