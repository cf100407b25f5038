"""Two Channels with real signatures under random interleavings of adds, fulfills, fails and signatures.

Messages travel through the wire format over in-order links. After every step:
both sides' views of every commitment give the same transaction, balances are
conserved, commitment numbers never go back; at the end, after quiescing, both
sides hold identical latest commitments and each can broadcast its own.
"""

from __future__ import annotations

from collections import deque

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from lightspeed.channel.htlc_log import Side
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import UsageError
from tests.test_channel_state import FUNDING_SAT, open_pair

PREIMAGES = [bytes([i]) * 32 for i in range(1, 200)]


class ChannelPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        alice, bob = open_pair()
        self.channels = {"a": alice, "b": bob}
        self.links: dict[str, deque[bytes]] = {"a": deque(), "b": deque()}  # messages to a / b
        self.next_preimage = 0
        self.preimage_of: dict[bytes, bytes] = {}

    def _send(self, sender: str, message: object) -> None:
        self.links["b" if sender == "a" else "a"].append(encode_message(message))  # type: ignore[arg-type]

    @rule(who=st.sampled_from("ab"), amount=st.integers(1_000, 30_000_000))
    def add(self, who: str, amount: int) -> None:
        preimage = PREIMAGES[self.next_preimage % len(PREIMAGES)]
        self.next_preimage += 1
        try:
            message = self.channels[who].add_htlc(amount, sha256(preimage), 800)
        except UsageError:
            return  # not enough balance: a refused command changes nothing
        self.preimage_of[sha256(preimage)] = preimage
        self._send(who, message)

    @rule(feerate=st.integers(253, 20_000))
    def update_fee(self, feerate: int) -> None:
        try:
            message = self.channels["a"].update_fee(feerate)  # alice is the funder
        except UsageError:
            return
        self._send("a", message)

    @rule(who=st.sampled_from("ab"))
    def sign(self, who: str) -> None:
        channel = self.channels[who]
        if channel.log.has_changes_to_sign() and not channel.log.awaiting_revoke:
            self._send(who, channel.sign())

    @rule(who=st.sampled_from("ab"), pick=st.integers(0, 99), fulfill=st.booleans())
    def settle(self, who: str, pick: int, fulfill: bool) -> None:
        channel = self.channels[who]
        offered = [h for h in channel.log.commitment(Side.LOCAL).htlcs if h.offerer is Side.REMOTE]
        if not offered:
            return
        htlc = offered[pick % len(offered)]
        try:
            message = (channel.fulfill_htlc(htlc.htlc_id, self.preimage_of[htlc.payment_hash]) if fulfill
                       else channel.fail_htlc(htlc.htlc_id, b"no"))
        except UsageError:
            return
        self._send(who, message)

    @rule(lose_a=st.booleans(), lose_b=st.booleans())
    def reconnect(self, lose_a: bool, lose_b: bool) -> None:
        """The connection drops (maybe losing what was in flight), then channel_reestablish."""
        lost = {"a": lose_a, "b": lose_b}
        for to in "ab":
            if lost[to]:
                self.links[to].clear()
        while any(self.links[to] for to in "ab" if not lost[to]):
            for to in "ab":
                if lost[to]:
                    self.links[to].clear()  # replies towards a lost direction are lost too
                elif self.links[to]:
                    self.deliver(to)
        for to in "ab":
            self.links[to].clear()  # nothing from the old connection arrives after it dropped
        a, b = self.channels["a"], self.channels["b"]
        a.disconnected()
        b.disconnected()
        a_msg, b_msg = a.reestablish_message(), b.reestablish_message()
        for m in a.receive_reestablish(decode_message(encode_message(b_msg))):  # type: ignore[arg-type]
            self._send("a", m)
        for m in b.receive_reestablish(decode_message(encode_message(a_msg))):  # type: ignore[arg-type]
            self._send("b", m)

    @rule(to=st.sampled_from("ab"))
    def deliver(self, to: str) -> None:
        if not self.links[to]:
            return
        replies, _ = self.channels[to].receive(decode_message(self.links[to].popleft()))  # type: ignore[arg-type]
        for reply in replies:
            self._send(to, reply)

    @invariant()
    def both_sides_build_the_same_transactions(self) -> None:
        a, b = self.channels["a"], self.channels["b"]
        for a_owner, b_owner in ((Side.LOCAL, Side.REMOTE), (Side.REMOTE, Side.LOCAL)):
            ctn = min(a.log.ctn[a_owner], b.log.ctn[b_owner])
            assert a.commitment(a_owner, ctn).tx == b.commitment(b_owner, ctn).tx

    @invariant()
    def balances_are_conserved(self) -> None:
        for channel in self.channels.values():
            for owner in Side:
                view = channel.log.commitment(owner)
                assert view.to_local_msat + view.to_remote_msat + sum(h.amount_msat for h in view.htlcs) == FUNDING_SAT * 1000

    @rule()
    def quiesce(self) -> None:
        """Deliver everything and sign until nothing moves (a calm moment in the channel)."""
        for _ in range(40):
            moved = False
            for who in "ab":
                while self.links[who]:
                    self.deliver(who)
                    moved = True
                channel = self.channels[who]
                if channel.log.has_changes_to_sign() and not channel.log.awaiting_revoke:
                    self.sign(who)
                    moved = True
            if not moved:
                break

    def teardown(self) -> None:
        self.quiesce()
        a, b = self.channels["a"], self.channels["b"]
        assert a.commitment(Side.LOCAL).tx == b.commitment(Side.REMOTE).tx
        assert b.commitment(Side.LOCAL).tx == a.commitment(Side.REMOTE).tx
        if a.log.ctn[Side.LOCAL] > 0:
            a.signed_local_commitment()  # holds a valid peer signature for its latest commitment


TestChannelPair = ChannelPair.TestCase
TestChannelPair.settings = settings(max_examples=30, stateful_step_count=60, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
