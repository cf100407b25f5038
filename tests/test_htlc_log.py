"""Two HtlcLogs stepped through random interleavings of BOLT 2 updates over in-order links.

The paired-machine harness of STYLE.md: both sides' views of every commitment
agree, balances are conserved, commitment numbers only grow, and no HTLC is lost.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lightspeed.channel.htlc_log import CommitmentView, HtlcLog, Side
from lightspeed.errors import PeerProtocolError, UsageError

CAPACITY = 10_000_000


def normalized(view: CommitmentView) -> tuple[int, int, tuple[tuple[str, int, int], ...]]:
    rel = tuple(sorted(("owner" if h.offerer is view.owner else "other", h.htlc_id, h.amount_msat) for h in view.htlcs))
    return view.to_local_msat, view.to_remote_msat, rel


class Pair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.logs = {"a": HtlcLog(6_000_000, 4_000_000), "b": HtlcLog(4_000_000, 6_000_000)}
        self.links: dict[str, deque[tuple[Any, ...]]] = {"a": deque(), "b": deque()}  # messages *to* a / b
        self.last_ctn = {"a": (0, 0), "b": (0, 0)}

    def _send(self, sender: str, message: tuple[Any, ...]) -> None:
        self.links["b" if sender == "a" else "a"].append(message)

    @rule(who=st.sampled_from("ab"), amount=st.integers(1, 500_000))
    def add(self, who: str, amount: int) -> None:
        htlc = self.logs[who].send_add(amount, bytes(32), 500)
        self._send(who, ("add", htlc.htlc_id, amount))

    @rule(who=st.sampled_from("ab"))
    def commit(self, who: str) -> None:
        log = self.logs[who]
        if log.has_changes_to_sign() and not log._awaiting_revoke:
            log.send_commitment()
            self._send(who, ("commit",))

    @rule(who=st.sampled_from("ab"), pick=st.integers(0, 50), fulfill=st.booleans())
    def remove(self, who: str, pick: int, fulfill: bool) -> None:
        log = self.logs[who]
        candidates = [h for h in log.commitment(Side.LOCAL).htlcs if h.offerer is Side.REMOTE]
        if not candidates:
            return
        htlc = candidates[pick % len(candidates)]
        try:
            (log.send_fulfill if fulfill else log.send_fail)(htlc.htlc_id)
        except UsageError:
            return  # not yet irrevocably committed, or already being removed
        self._send(who, ("fulfill" if fulfill else "fail", htlc.htlc_id))

    @precondition(lambda self: self.links["a"] or self.links["b"])
    @rule(to=st.sampled_from("ab"))
    def deliver(self, to: str) -> None:
        if not self.links[to]:
            return
        message = self.links[to].popleft()
        log = self.logs[to]
        kind = message[0]
        if kind == "add":
            log.recv_add(message[1], message[2], bytes(32), 500)
        elif kind == "fulfill":
            log.recv_fulfill(message[1])
        elif kind == "fail":
            log.recv_fail(message[1])
        elif kind == "commit":
            log.recv_commitment()
            log.send_revoke()
            self._send(to, ("revoke",))
        else:
            log.recv_revoke()

    @invariant()
    def balances_are_conserved(self) -> None:
        for log in self.logs.values():
            for owner in Side:
                view = log.commitment(owner)
                assert view.to_local_msat + view.to_remote_msat + sum(h.amount_msat for h in view.htlcs) == CAPACITY

    @invariant()
    def both_sides_agree_on_every_commitment(self) -> None:
        a, b = self.logs["a"], self.logs["b"]
        for a_owner, b_owner in ((Side.LOCAL, Side.REMOTE), (Side.REMOTE, Side.LOCAL)):
            oldest = max(a.oldest_view[a_owner], b.oldest_view[b_owner])
            for ctn in range(oldest, min(a.ctn[a_owner], b.ctn[b_owner]) + 1):
                assert normalized(a.commitment(a_owner, ctn)) == normalized(b.commitment(b_owner, ctn))

    @invariant()
    def commitment_numbers_only_grow(self) -> None:
        for name, log in self.logs.items():
            now = (log.ctn[Side.LOCAL], log.ctn[Side.REMOTE])
            assert now >= self.last_ctn[name]
            self.last_ctn[name] = now

    def teardown(self) -> None:
        # Quiesce: deliver everything, sign whatever is left, until nothing moves.
        for _ in range(50):
            moved = False
            for who in "ab":
                while self.links[who]:
                    self.deliver(who)
                    moved = True
            for who in "ab":
                log = self.logs[who]
                if log.has_changes_to_sign() and not log._awaiting_revoke:
                    self.commit(who)
                    moved = True
            if not moved:
                break
        a, b = self.logs["a"], self.logs["b"]
        # No HTLC lost: every add is either still live in both latest commitments or settled.
        assert normalized(a.commitment(Side.LOCAL)) == normalized(b.commitment(Side.REMOTE))
        assert normalized(a.commitment(Side.REMOTE)) == normalized(b.commitment(Side.LOCAL))


TestPair = Pair.TestCase
TestPair.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_a_payment_round_trip_moves_the_balance() -> None:
    a, b = HtlcLog(1_000_000, 0), HtlcLog(0, 1_000_000)
    htlc = a.send_add(300_000, b"\x01" * 32, 600)
    b.recv_add(htlc.htlc_id, 300_000, b"\x01" * 32, 600)
    assert a.send_commitment().htlcs == (htlc,)  # b's new commitment holds it
    b.recv_commitment()
    b.send_revoke()
    a.recv_revoke()
    b.send_commitment()
    a.recv_commitment()
    a.send_revoke()
    b.recv_revoke()
    b.send_fulfill(htlc.htlc_id)
    a.recv_fulfill(htlc.htlc_id)
    b.send_commitment()
    a.recv_commitment()
    a.send_revoke()
    b.recv_revoke()
    a.send_commitment()
    b.recv_commitment()
    b.send_revoke()
    a.recv_revoke()
    assert a.commitment(Side.LOCAL).to_local_msat == 700_000
    assert b.commitment(Side.LOCAL).to_local_msat == 300_000
    # Settled history is folded into the base: old views are gone, current ones are unchanged.
    assert a.commitment(Side.LOCAL).htlcs == () and a.settled() == []
    assert a.oldest_view[Side.LOCAL] >= 1
    with pytest.raises(UsageError, match="compacted"):
        a.commitment(Side.LOCAL, 0)


def test_protocol_violations_are_peer_errors() -> None:
    log = HtlcLog(1000, 1000)
    with pytest.raises(PeerProtocolError, match="expected 0"):
        log.recv_add(5, 10, bytes(32), 1)
    with pytest.raises(PeerProtocolError):
        log.recv_revoke()
    with pytest.raises(PeerProtocolError):
        log.recv_commitment()  # nothing to commit
    log.recv_add(0, 10, bytes(32), 1)
    with pytest.raises(PeerProtocolError, match="no HTLC 0 offered by the local side"):
        log.recv_fulfill(0)  # we offered nothing
    ours = log.send_add(20, bytes(32), 1)
    with pytest.raises(PeerProtocolError, match="not yet committed"):
        log.recv_fulfill(ours.htlc_id)  # settling before the add is irrevocably committed
    log.send_commitment()  # covers our own add
    log.recv_revoke()
    with pytest.raises(UsageError, match="nothing to sign"):
        log.send_commitment()  # the remote's add is not acked yet: nothing for us to sign
