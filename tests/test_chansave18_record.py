"""Issue 18: saving a channel encodes only what changed, and writes the same bytes as before.

(Also: the HTLC log keeps its computed views across an uncommitted add, removal or fee
update, which change no view or, for an add, only the pending ones, in a known way.)

``channel_to_record`` now assembles the record's JSON from kept pieces (config, secrets,
journal messages, HTLC log entries, the peer's HTLC signatures). ``channel_record`` is
the record built whole, as it always was; the bytes stored must be exactly its JSON.
A seeded random walk of two channels (adds, fulfills, fails, fee updates, signatures
delivered late, disconnections with channel_reestablish, restarts from the record)
compares the two after every step, for both commitment types.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
from collections import deque
from collections.abc import ItemsView, Iterator
from typing import Any

import pytest

from lightspeed.channel import Channel, htlc_log, serialize
from lightspeed.channel.htlc_log import HtlcLog, LoggedHtlc, Side
from lightspeed.channel.numbered import NumberedBook
from lightspeed.channel.pair import channel_pair
from lightspeed.channel.serialize import (
    channel_from_record,
    channel_record,
    channel_to_record,
    remote_commitment_record,
)
from lightspeed.channel.state import ONION_SIZE, ChannelConfig
from lightspeed.codec.generated import ChannelReestablish
from lightspeed.codec.message_base import WireMessage
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.keys import MAX_INDEX, per_commitment_secret
from lightspeed.crypto.shachain import ShachainStore
from lightspeed.errors import UsageError


def _full_json(channel: Channel, key_index: int | None = None) -> bytes:
    """What the store wrote before the kept pieces: one dumps of the whole record."""
    return json.dumps(channel_record(channel, key_index), separators=(",", ":"), sort_keys=True).encode()


def _wire(message: WireMessage) -> WireMessage:
    decoded = decode_message(encode_message(message))
    assert isinstance(decoded, WireMessage)
    return decoded


def _restart(channel: Channel) -> Channel:
    """The channel as a node loads it from its store (the record and the remote commitments)."""
    remote = {ctn: remote_commitment_record(channel, ctn) for ctn in channel.signed_remote}
    return channel_from_record(channel_to_record(channel), remote)


def _views_match_a_fresh_log(log: HtlcLog) -> None:
    """Every view the log gives (kept ones updated in place by adds) equals one computed afresh.

    Asking for every view also fills the log's memo, so the next step's change meets kept views.
    """
    twin = HtlcLog.from_record(log.to_record())
    for owner in Side:
        for ctn in range(log.oldest_view[owner], log.ctn[owner] + 1):
            for pending in (False, True):
                assert log.commitment(owner, ctn, pending) == twin.commitment(owner, ctn, pending)


def _unresolved_by_views(log: HtlcLog) -> set[LoggedHtlc]:
    """HTLCs in a pending view or an unrevoked commitment, from the views (what the node asked before)."""
    found = set(log.commitment(Side.REMOTE, pending=True).htlcs) | set(log.commitment(Side.LOCAL, pending=True).htlcs)
    for owner in Side:
        for ctn in range(max(log.revoked[owner] + 1, log.oldest_view[owner]), log.ctn[owner]):
            found.update(log.commitment(owner, ctn).htlcs)
    return found


class _Walk:
    """Two channels and the messages in flight each way, stepped by a seeded generator."""

    def __init__(self, anchors: bool, seed: int) -> None:
        self.rng = random.Random(seed)
        alice, bob = channel_pair(10_000_000, 6_000_000_000, anchors=anchors, max_accepted_htlcs=483)
        self.channels = [alice, bob]
        self.queues: list[deque[WireMessage]] = [deque(), deque()]  # [i]: messages to channel i
        self.preimages: dict[bytes, bytes] = {}
        self.done: dict[str, int] = {}

    def _send(self, sender: int, message: WireMessage) -> None:
        self.queues[1 - sender].append(_wire(message))

    def _count(self, what: str) -> None:
        self.done[what] = self.done.get(what, 0) + 1

    def step(self) -> None:
        who = self.rng.randrange(2)
        me = self.channels[who]
        choice = self.rng.random()
        try:
            if choice < 0.22:
                preimage = os.urandom(32)
                self.preimages[sha256(preimage)] = preimage
                onion = os.urandom(ONION_SIZE)
                self._send(who, me.add_htlc(self.rng.randrange(600_000, 3_000_000), sha256(preimage), 800, onion))
                self._count("add")
            elif choice < 0.36:
                theirs = [h for h in me.log.commitment(Side.LOCAL).htlcs if h.offerer is Side.REMOTE]
                if theirs:
                    htlc = self.rng.choice(theirs)
                    if self.rng.random() < 0.7:
                        self._send(who, me.fulfill_htlc(htlc.htlc_id, self.preimages[htlc.payment_hash]))
                        self._count("fulfill")
                    else:
                        self._send(who, me.fail_htlc(htlc.htlc_id, os.urandom(40)))
                        self._count("fail")
            elif choice < 0.40 and who == 0:  # only the funder sends update_fee
                self._send(who, me.update_fee(self.rng.randrange(253, 6000)))
                self._count("fee")
            elif choice < 0.55:
                if me.log.has_changes_to_sign() and not me.log.awaiting_revoke:
                    self._send(who, me.sign())
                    self._count("sign")
            elif choice < 0.95:
                if self.queues[who]:
                    replies, _ = me.receive(self.queues[who].popleft())
                    for reply in replies:
                        self._send(who, reply)
                    self._count("deliver")
            elif choice < 0.965:
                self._reconnect()
            else:
                self.channels[who] = _restart(me)
                self._count("restart")
        except UsageError:
            pass  # not removable yet, already being removed, a fee the funder cannot pay: refused, no change

    def _reconnect(self) -> None:
        """The connection drops (messages in flight are lost); both reestablish and retransmit."""
        for queue in self.queues:
            queue.clear()
        for channel in self.channels:
            channel.disconnected()
        hello = [_wire(channel.reestablish_message()) for channel in self.channels]
        for who, channel in enumerate(self.channels):
            message = hello[1 - who]
            assert isinstance(message, ChannelReestablish)
            for resent in channel.receive_reestablish(message):
                self._send(who, resent)
        self._count("reconnect")


@pytest.mark.parametrize("anchors", [True, False])
def test_saved_record_is_byte_identical_to_the_whole_build_over_a_random_walk(anchors: bool) -> None:
    walk = _Walk(anchors, seed=1818 + anchors)
    for _ in range(800):
        walk.step()
        for channel in walk.channels:
            saved = channel_to_record(channel)
            assert saved == _full_json(channel)
            log = channel.log
            assert log.live_offered_ids() == {h.htlc_id for owner in Side for h in log.commitment(
                owner, pending=True).htlcs if h.offerer is Side.LOCAL}
            _views_match_a_fresh_log(log)
            assert log.unresolved() == _unresolved_by_views(log)
            assert channel_to_record(channel, 7) == _full_json(channel, 7)  # secrets left out, only the index
            assert channel_to_record(channel) == saved  # saving twice: same bytes
    # The walk went through every kind of step, many times.
    assert all(walk.done.get(kind, 0) >= 5 for kind in
               ("add", "fulfill", "fail", "fee", "sign", "deliver", "reconnect", "restart")), walk.done
    # A channel loaded from its saved record writes it back unchanged.
    for channel in walk.channels:
        saved = channel_to_record(channel)
        assert channel_to_record(_restart(channel)) == saved


def test_a_save_encodes_only_the_log_entries_and_parts_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = channel_pair(10_000_000, 6_000_000_000, anchors=True, max_accepted_htlcs=483)
    preimages = [os.urandom(32) for _ in range(4)]
    for preimage in preimages[:3]:
        bob.receive(alice.add_htlc(1_000_000, sha256(preimage), 800, os.urandom(ONION_SIZE)))
    entries: list[int] = []
    parts: list[object] = []
    configs: list[int] = []
    real_entry, real_encode, real_config = htlc_log._update_json, serialize.encode, serialize._config_record

    def counting_entry(update: htlc_log._Update) -> str:  # the real writer, counted
        entries.append(1)
        return real_entry(update)

    def counting_encode(value: object) -> str:  # the real encoder, counted (lists: the kept parts)
        parts.append(value)
        return real_encode(value)

    def counting_config(config: ChannelConfig) -> dict[str, object]:
        configs.append(1)
        return real_config(config)

    monkeypatch.setattr(htlc_log, "_update_json", counting_entry)
    monkeypatch.setattr(serialize, "encode", counting_encode)
    monkeypatch.setattr(serialize, "_config_record", counting_config)
    first = channel_to_record(alice)
    assert len(entries) == 3 and len(configs) == 1  # every entry once, the config once
    del entries[:], parts[:]
    assert channel_to_record(alice) == first
    # Nothing encoded again: no log entry, no list (secrets, HTLC signatures), no config.
    assert entries == [] and not any(isinstance(p, list) for p in parts) and len(configs) == 1
    bob.receive(alice.add_htlc(1_000_000, sha256(preimages[3]), 800, os.urandom(ONION_SIZE)))
    channel_to_record(alice)
    assert len(entries) == 1  # the new add only
    del entries[:]
    replies, _ = bob.receive(alice.sign())  # the four adds enter bob's commitment: their numbers change
    channel_to_record(alice)
    assert len(entries) == 4
    for reply in replies:
        alice.receive(reply)
    del entries[:], parts[:]
    replies, _ = alice.receive(bob.sign())  # new HTLC signatures from the peer: that part is encoded again
    channel_to_record(alice)
    assert len(entries) == 4 and sum(isinstance(p, list) for p in parts) == 1
    assert channel_to_record(alice) == _full_json(alice)


def test_numbered_book_knows_its_top_on_every_way_in_and_finds_the_numbers_above_like_a_scan() -> None:
    rng = random.Random(5)
    book = NumberedBook[bytes]({3: b"c"}, **{})
    plain: dict[int, bytes] = {3: b"c"}
    for _ in range(400):
        number, point = rng.randrange(60), os.urandom(4)
        way = rng.randrange(5)
        if way == 0:
            book[number] = point
        elif way == 1:
            book.update({number: point, number + 1: point})
            plain[number + 1] = point
        elif way == 2:
            book.update([(number, point)])
        elif way == 3:
            point = book.setdefault(number, point)
        else:
            book |= {number: point}
        plain[number] = point
        if rng.random() < 0.1 and plain:  # a removal leaves the top high: still exact
            gone = rng.choice(sorted(plain))
            del book[gone], plain[gone]
        assert book == plain
        below = rng.randrange(-1, 62)
        assert book.numbers_above(below) == sorted(n for n in plain if n > below)


class _NoScan(NumberedBook[Any]):
    """A book that refuses to be walked: a save must look entries up by number."""

    def __iter__(self) -> Iterator[int]:
        raise AssertionError("the save walked a whole book")

    def items(self) -> ItemsView[int, Any]:
        raise AssertionError("the save walked a whole book")


class _NoScanDict(dict[int, bytes]):
    def __iter__(self) -> Iterator[int]:
        raise AssertionError("the save walked every preimage ever received")

    def items(self) -> ItemsView[int, bytes]:
        raise AssertionError("the save walked every preimage ever received")


def test_a_save_does_not_walk_what_grows_with_the_channels_age() -> None:
    """The peer's points, the commitments we signed and the preimages received grow with every payment;
    a save looks up the few it writes."""
    alice, bob = channel_pair(10_000_000, 6_000_000_000, anchors=True, max_accepted_htlcs=483)
    for _ in range(30):  # thirty payments from alice to bob, each settled for good
        preimage = os.urandom(32)
        add = alice.add_htlc(1_000_000, sha256(preimage), 800)
        bob.receive(add)
        for signer, other in ((alice, bob), (bob, alice)):
            replies, _ = other.receive(signer.sign())
            for reply in replies:
                signer.receive(reply)
        alice.receive(bob.fulfill_htlc(add.id, preimage))
        for signer, other in ((bob, alice), (alice, bob)):
            replies, _ = other.receive(signer.sign())
            for reply in replies:
                signer.receive(reply)
    preimage = os.urandom(32)
    bob.receive(alice.add_htlc(1_000_000, sha256(preimage), 800))  # one in flight
    assert len(alice.remote_points) > 60 and len(alice.preimages) == 30
    expected = _full_json(alice)
    signed = sorted(alice.signed_remote)
    assert len(signed) == 60 and signed == list(range(1, 61))
    alice.remote_points = _NoScan(alice.remote_points)
    alice.signed_remote = _NoScan(alice.signed_remote)
    alice.preimages = _NoScanDict(alice.preimages)
    assert channel_to_record(alice) == expected
    # What the node's save stores next: the commitments signed since the last one it stored.
    assert alice.signed_remote_after(signed[-3]) == signed[-2:] and alice.signed_remote_after(signed[-1]) == []
    # A book replaced by a plain dict by hand is scanned: still the same record.
    alice.remote_points = dict(dict.items(alice.remote_points))
    assert channel_to_record(alice) == expected
    alice.signed_remote = dict(dict.items(alice.signed_remote))
    assert alice.signed_remote_after(signed[-3]) == signed[-2:]


def test_shachain_bytes_are_kept_until_the_next_secret_arrives() -> None:
    """Saved at every revocation: the kept bytes must follow every insert."""
    seed = os.urandom(32)
    kept, fresh_secrets = ShachainStore(), []
    for n in range(40):
        index = MAX_INDEX - n
        secret = per_commitment_secret(seed, index)
        kept.insert(index, secret)
        fresh_secrets.append((index, secret))
        assert kept.serialize() is kept.serialize()  # kept between inserts
        fresh = ShachainStore()
        for i, s in fresh_secrets:
            fresh.insert(i, s)
        assert kept.serialize() == fresh.serialize()
        assert ShachainStore.parse(kept.serialize()).serialize() == kept.serialize()


def test_a_numbered_book_survives_copy_and_pickle() -> None:
    book = NumberedBook[bytes]({1: b"a", 7: b"b"})
    for twin in (copy.deepcopy(book), copy.copy(book), pickle.loads(pickle.dumps(book))):
        assert twin == book and twin.numbers_above(0) == [1, 7]
        twin[9] = b"c"
        assert twin.numbers_above(6) == [7, 9]
