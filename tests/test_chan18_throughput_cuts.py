"""Issue 18: the CPU cuts on the payment path keep what is stored byte for byte.

The HTLC log keys its dicts by Side thousands of times per payment (C-level hash now),
and every store write of a channel encoded its whole journal again (now each message
once). Neither may change a byte of what is written or how a channel resumes.
"""

from __future__ import annotations

import os
import random

import pytest

from lightspeed.channel import Channel, serialize
from lightspeed.channel.htlc_log import HtlcLog, Removal, Side
from lightspeed.channel.pair import channel_pair
from lightspeed.channel.serialize import channel_from_record, channel_to_record
from lightspeed.codec.message_base import WireMessage
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import UsageError


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
    assert len(alice._journal_json) == 3
    channel_to_record(alice)
    assert set(alice._journal_json) == {id(m) for m in alice._journal}


def _fresh_views_match(log: HtlcLog) -> None:
    """Every view the log can give equals the one a freshly loaded copy (no memo) computes."""
    twin = HtlcLog.from_record(log.to_record())
    for owner in Side:
        for ctn in range(log.oldest_view[owner], log.ctn[owner] + 1):
            for pending in (False, True):
                assert log.commitment(owner, ctn, pending) == twin.commitment(owner, ctn, pending)
        assert log.commitment(owner) == twin.commitment(owner)


def test_views_are_computed_once_between_changes_and_always_match_a_fresh_log() -> None:
    """Random adds, fulfills, fails, fee updates and commitment dances in both directions; the memo of
    views is checked against a log loaded from the record after every step."""
    rng = random.Random(18)
    alice, bob = channel_pair(10_000_000, 5_000_000_000, anchors=True, max_accepted_htlcs=483)
    assert alice.log.commitment(Side.LOCAL) is alice.log.commitment(Side.LOCAL)  # memoized
    preimages: dict[tuple[int, int], bytes] = {}  # (offerer 0 alice / 1 bob, id) -> preimage
    sides = ((alice, bob, 0), (bob, alice, 1))
    done = {"add": 0, "remove": 0, "sign": 0}
    for _ in range(300):
        sender, receiver, who = sides[rng.randrange(2)]
        choice = rng.random()
        if choice < 0.3:
            preimage = os.urandom(32)
            add = sender.add_htlc(rng.randrange(1_000, 400_000), sha256(preimage), 800)
            preimages[(who, add.id)] = preimage
            receiver.receive(add)
            done["add"] += 1
        elif choice < 0.5:  # settle one HTLC the receiver can remove (offered by the other side)
            removable = [h for h in sender.log.commitment(Side.LOCAL).htlcs
                         if h.offerer is Side.REMOTE and sender.log.commitment(Side.REMOTE).htlcs.count(h)]
            if removable:
                htlc = rng.choice(removable)
                try:
                    if rng.random() < 0.7:
                        receiver.receive(sender.fulfill_htlc(htlc.htlc_id, preimages[(1 - who, htlc.htlc_id)]))
                    else:
                        receiver.receive(sender.fail_htlc(htlc.htlc_id, b"\x00" * 32))
                    done["remove"] += 1
                except UsageError:
                    pass  # already being removed, or not yet irrevocably committed
        elif sender.log.has_changes_to_sign() and not sender.log.awaiting_revoke:
            replies, _ = receiver.receive(sender.sign())
            for reply in replies:
                sender.receive(reply)
            done["sign"] += 1
        for channel in (alice, bob):
            _fresh_views_match(channel.log)
    assert min(done.values()) >= 20, done
    # The dance converges: both sides agree on the balances in every current commitment.
    assert alice.log.commitment(Side.LOCAL).to_local_msat == bob.log.commitment(Side.REMOTE).to_local_msat
