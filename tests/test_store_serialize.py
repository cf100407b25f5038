"""A channel restored from its record continues exactly as the original would have.

Two identical channel pairs (same secrets, same funding) run the same random
sequence of adds, fee updates, signatures, deliveries, fulfills, fails and
reconnections; in the second pair a channel is replaced, at random moments, by
the one rebuilt from its stored records. Signatures are deterministic (RFC 6979),
so every message both pairs send must be byte-identical, and so must the records.
"""

from __future__ import annotations

import json
import os
from collections import deque

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lightspeed.channel import Channel
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.pair import channel_pair
from lightspeed.channel.serialize import (
    channel_from_record,
    channel_to_record,
    remote_commitment_record,
)
from lightspeed.channel.state import LocalSecrets
from lightspeed.codec.message_base import WireMessage
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, UsageError

FUNDING_SAT = 1_000_000


def restore(channel: Channel) -> Channel:
    remote = {ctn: remote_commitment_record(channel, ctn) for ctn in channel.signed_remote}
    return channel_from_record(channel_to_record(channel), remote)


def _secrets(seed: int) -> LocalSecrets:
    return LocalSecrets(*(bytes([seed + i]) * 32 for i in range(6)))


class Twin:
    """One channel pair and the in-order links between its two sides."""

    def __init__(self, txid: bytes) -> None:
        alice, bob = channel_pair(FUNDING_SAT, 700_000_000, funding_txid=txid,
                                  funder_secrets=_secrets(1), fundee_secrets=_secrets(40))
        alice.initial_signature()  # what an opening does: remote commitment 0 is kept for punishment
        bob.initial_signature()
        self.ch = {"a": alice, "b": bob}
        self.links: dict[str, deque[bytes]] = {"a": deque(), "b": deque()}
        self.sent: list[bytes] = []

    def send(self, sender: str, message: WireMessage) -> None:
        data = encode_message(message)
        self.sent.append(data)
        self.links["b" if sender == "a" else "a"].append(data)

    def deliver(self, to: str) -> None:
        if self.links[to]:
            message = decode_message(self.links[to].popleft())
            assert isinstance(message, WireMessage)
            replies, _ = self.ch[to].receive(message)
            for reply in replies:
                self.send(to, reply)

    def apply(self, op: tuple[str, str, int, bool]) -> None:
        kind, who, n, flag = op
        channel = self.ch[who]
        try:
            if kind == "add":
                preimage = sha256(n.to_bytes(8, "big"))
                self.send(who, channel.add_htlc(1_000 + n * 997, sha256(preimage), 700 + n % 50))
            elif kind == "fee" and who == "a":
                self.send(who, channel.update_fee(253 + n * 31))
            elif kind == "sign" and channel.log.has_changes_to_sign() and not channel.log.awaiting_revoke:
                self.send(who, channel.sign())
            elif kind == "deliver":
                self.deliver(who)
            elif kind == "settle":
                offered = [h for h in channel.log.commitment(Side.LOCAL).htlcs if h.offerer is Side.REMOTE]
                if offered:
                    htlc = offered[n % len(offered)]
                    preimage = next(sha256(i.to_bytes(8, "big")) for i in range(400)
                                    if sha256(sha256(i.to_bytes(8, "big"))) == htlc.payment_hash)
                    self.send(who, channel.fulfill_htlc(htlc.htlc_id, preimage) if flag
                              else channel.fail_htlc(htlc.htlc_id, b"no"))
            elif kind == "quiesce":  # deliver and sign until nothing moves: a full commitment dance
                for _ in range(20):
                    for side in "ab":
                        while self.links[side]:
                            self.deliver(side)
                        c = self.ch[side]
                        if c.log.has_changes_to_sign() and not c.log.awaiting_revoke:
                            self.send(side, c.sign())
            elif kind == "reconnect":
                self.links["a"].clear()
                self.links["b"].clear()
                for side in "ab":
                    self.ch[side].disconnected()
                a_msg, b_msg = self.ch["a"].reestablish_message(), self.ch["b"].reestablish_message()
                for m in self.ch["a"].receive_reestablish(b_msg):
                    self.send("a", m)
                for m in self.ch["b"].receive_reestablish(a_msg):
                    self.send("b", m)
        except UsageError:
            pass  # a refused command changes nothing, in both twins alike


OPS = st.tuples(st.sampled_from(["add", "add", "sign", "sign", "deliver", "deliver", "deliver", "settle", "settle",
                                 "fee", "reconnect", "quiesce", "quiesce"]),
                st.sampled_from("ab"), st.integers(0, 399), st.booleans())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(OPS, st.booleans()), min_size=25, max_size=80))
def test_a_restored_channel_continues_identically(ops: list[tuple[tuple[str, str, int, bool], bool]]) -> None:
    txid = bytes(range(32))
    original, restored = Twin(txid), Twin(txid)
    for op, do_restore in ops:
        original.apply(op)
        restored.apply(op)
        if do_restore:
            side = op[1]
            restored.ch[side] = restore(restored.ch[side])
        assert restored.sent == original.sent
        for side in "ab":
            assert channel_to_record(restored.ch[side]) == channel_to_record(original.ch[side])
    signed = sum(1 for data in original.sent if decode_message(data).NAME == "commitment_signed")
    event(f"commitment_signed: {min(signed // 5 * 5, 30)}+")
    # Drain and settle: the restored pair reaches the same final commitments.
    for _ in range(30):
        for twin in (original, restored):
            for side in "ab":
                twin.apply(("deliver", side, 0, False))
                twin.apply(("sign", side, 0, False))
    assert restored.sent == original.sent
    for side in "ab":
        assert restored.ch[side].commitment(Side.LOCAL).tx == original.ch[side].commitment(Side.LOCAL).tx


def test_a_record_may_hold_only_the_key_index_of_our_secrets() -> None:
    alice, _ = channel_pair(FUNDING_SAT, funder_secrets=_secrets(7))
    record = channel_to_record(alice, key_index=7)
    assert alice.secrets.funding.hex() not in record.decode()  # no private key in the store
    back = channel_from_record(record, derive_secrets=_secrets)
    assert channel_to_record(back, key_index=7) == record and back.secrets == alice.secrets
    with pytest.raises(DecodeError, match="no way to derive"):
        channel_from_record(record)
    with pytest.raises(DecodeError, match="do not match"):
        channel_from_record(record, derive_secrets=lambda index: _secrets(index + 1))


def test_restored_channel_keeps_what_a_force_close_and_a_penalty_need() -> None:
    twin = Twin(os.urandom(32))
    for op in [("add", "a", 5, False), ("sign", "a", 0, False), ("deliver", "b", 0, False),
               ("deliver", "b", 0, False), ("deliver", "a", 0, False), ("sign", "b", 0, False),
               ("deliver", "a", 0, False), ("deliver", "b", 0, False)]:
        twin.apply(op)
    assert twin.ch["a"].log.ctn[Side.LOCAL] == 1 and twin.ch["a"].log.revoked[Side.REMOTE] == 0
    alice = twin.ch["a"]
    back = restore(alice)
    assert back.signed_local_commitment() == alice.signed_local_commitment()
    assert back.remote_htlc_signatures == alice.remote_htlc_signatures
    assert back.signed_remote == alice.signed_remote
    for ctn in back.signed_remote:
        assert back.remote_points[ctn] == alice.remote_points[ctn]
    assert back.remote_secrets.serialize() == alice.remote_secrets.serialize()


@pytest.mark.parametrize("mutate", [
    lambda r: {**r, "version": 99},
    lambda r: {k: v for k, v in r.items() if k != "log"},
    lambda r: {**r, "journal": ["zz"]},
    lambda r: {**r, "remote_secrets": "01"},
])
def test_a_corrupt_record_is_refused_with_a_decode_error(mutate: object) -> None:
    alice, _ = channel_pair(FUNDING_SAT)
    record = json.loads(channel_to_record(alice))
    with pytest.raises(DecodeError, match=r"channel record|shachain"):
        channel_from_record(json.dumps(mutate(record)).encode())  # type: ignore[operator]
