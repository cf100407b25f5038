"""The LSP's hold policy: limits at their boundary, the CLTV deadline rule, and releases that are
authenticated and single use (forged, replayed and never-held releases change nothing)."""

from __future__ import annotations

import pytest

from lightspeed.asyncpay.policy import (
    HoldBook,
    HoldLimits,
    HoldRefused,
    HoldState,
    ReleaseKey,
    ReleaseRefused,
)
from lightspeed.errors import DecodeError, UsageError

LIMITS = HoldLimits(max_hold_seconds=3600, max_htlcs_per_client=3, max_held_msat_per_client=30_000,
                    safety_margin_blocks=12)
ALICE, BOB = b"\x02" + bytes(32), b"\x03" + bytes(32)
PID = b"p" * 32
NOW, HEIGHT = 1_000_000, 500


def book() -> HoldBook:
    return HoldBook(LIMITS, ReleaseKey(b"k" * 32))


def admit(b: HoldBook, key: str, amount: int = 1000, *, client: bytes = ALICE, secret: bytes = PID,
          cltv: int = HEIGHT + 100, now: int = NOW, height: int = HEIGHT) -> None:
    b.admit(key, client, b"h" * 32, amount, cltv, b.key.tag(secret), now=now, block_height=height)


def test_htlc_count_limit_n_ok_n_plus_one_refused_per_client() -> None:
    b = book()
    for i in range(3):
        admit(b, f"a{i}")
    with pytest.raises(HoldRefused, match="already has 3 held HTLCs, the limit is 3"):
        admit(b, "a3")
    assert len(b.held(ALICE)) == 3  # the refusal changed nothing
    admit(b, "b0", client=BOB)  # another client has its own budget


def test_msat_limit_n_ok_n_plus_one_refused() -> None:
    b = book()
    admit(b, "a0", 20_000)
    admit(b, "a1", 10_000)  # exactly 30 000: ok
    b2 = book()
    admit(b2, "a0", 20_000)
    with pytest.raises(HoldRefused, match=r"30001 msat .* exceeds the limit of 30000"):
        admit(b2, "a1", 10_001)
    assert [h.htlc_key for h in b2.held()] == ["a0"]


def test_admission_refused_inside_the_safety_margin() -> None:
    b = book()
    admit(b, "ok", cltv=HEIGHT + 13)  # fail height 501 > 500: can be held for one block
    with pytest.raises(HoldRefused, match="within the safety margin"):
        admit(b, "late", cltv=HEIGHT + 12)


def test_deadline_rule_fails_back_at_cltv_minus_margin_and_at_max_hold_time() -> None:
    b = book()
    admit(b, "cltv", cltv=HEIGHT + 20, secret=b"1" * 32)
    admit(b, "time", cltv=HEIGHT + 1000, secret=b"2" * 32)
    assert b.next_deadline() == (NOW + 3600, HEIGHT + 8)
    assert b.due(now=NOW + 3599, block_height=HEIGHT + 7) == []
    due = b.due(now=NOW + 3599, block_height=HEIGHT + 8)  # cltv_expiry - 12
    assert [(h.htlc_key, h.state) for h in due] == [("cltv", HoldState.FAILED)]
    due = b.due(now=NOW + 3600, block_height=HEIGHT + 8)
    assert [h.htlc_key for h in due] == ["time"]
    assert b.held() == [] and b.next_deadline() is None


def test_release_frees_every_part_together_once() -> None:
    b = book()
    admit(b, "part1", 600)
    admit(b, "part2", 400)
    admit(b, "other", secret=b"o" * 32)
    released = b.release(PID, now=NOW + 10, block_height=HEIGHT + 1)
    assert sorted(h.htlc_key for h in released) == ["part1", "part2"]
    assert all(h.state is HoldState.RELEASED for h in released)
    with pytest.raises(ReleaseRefused, match="already released: a replayed release does nothing"):
        b.release(PID, now=NOW + 11, block_height=HEIGHT + 1)
    assert [h.htlc_key for h in b.held()] == ["other"]


def test_forged_and_never_held_releases_do_nothing() -> None:
    b = book()
    admit(b, "a0")
    with pytest.raises(ReleaseRefused, match="forged, or never held"):
        b.release(b"x" * 32, now=NOW, block_height=HEIGHT)
    # The book stores only an HMAC of the pid: the stored tag itself is no release secret.
    tag = b.held()[0].release_tag
    assert tag != PID
    with pytest.raises(ReleaseRefused):
        b.release(tag, now=NOW, block_height=HEIGHT)
    # Another LSP's key tags the same pid differently.
    other = HoldBook(LIMITS, ReleaseKey(b"z" * 32), b.held())
    with pytest.raises(ReleaseRefused):
        other.release(PID, now=NOW, block_height=HEIGHT)
    assert len(b.held()) == 1


def test_release_after_the_deadline_is_refused_and_the_htlc_is_failed_instead() -> None:
    b = book()
    admit(b, "a0", cltv=HEIGHT + 20)
    with pytest.raises(ReleaseRefused, match="past their deadline"):
        b.release(PID, now=NOW, block_height=HEIGHT + 8)
    assert [h.htlc_key for h in b.due(now=NOW, block_height=HEIGHT + 8)] == ["a0"]


def test_draft_release_token_is_macd_and_single_use() -> None:
    key = ReleaseKey(b"k" * 32)
    b = HoldBook(LIMITS, key)
    token = key.issue_token(b"i" * 32, b"n" * 16)
    admit(b, "a0", secret=key.open_token(token))
    forged = token[:-1] + bytes([token[-1] ^ 1])
    with pytest.raises(DecodeError, match="path_id: release token MAC does not verify"):
        key.open_token(forged)
    with pytest.raises(DecodeError, match="path_id: 79 bytes"):
        key.open_token(token[:-1])
    assert [h.htlc_key for h in b.release(key.open_token(token), now=NOW, block_height=HEIGHT)] == ["a0"]
    with pytest.raises(ReleaseRefused, match="replayed"):
        b.release(key.open_token(token), now=NOW, block_height=HEIGHT)


def test_limits_are_announced_and_validated() -> None:
    assert LIMITS.announce() == {"max_hold_seconds": 3600, "max_htlcs_per_client": 3,
                                 "max_held_msat_per_client": 30_000, "safety_margin_blocks": 12}
    with pytest.raises(UsageError, match="safety_margin_blocks must be positive"):
        HoldLimits(safety_margin_blocks=0)


def test_hold_registrations_bounded_matched_by_client_and_hash_and_expiring() -> None:
    b = book()
    hashes = (b"1" * 32, b"2" * 32)
    reg = b.register(ALICE, hashes, PID, 30_000, now=NOW)  # exactly the msat limit: ok
    assert reg.release_tag == b.key.tag(PID) and PID not in (reg.release_tag, *reg.payment_hashes)
    with pytest.raises(HoldRefused, match="30001 msat exceeds"):
        b.register(ALICE, (b"9" * 32,), b"q" * 32, 30_001, now=NOW)
    with pytest.raises(HoldRefused, match="already registered"):
        b.register(BOB, (b"2" * 32,), b"q" * 32, 1, now=NOW)  # nobody else may claim the hash
    b.register(ALICE, (b"3" * 32,), b"r" * 32, 1, now=NOW)
    b.register(ALICE, (b"4" * 32,), b"s" * 32, 1, now=NOW)  # third: the limit
    with pytest.raises(HoldRefused, match="already has 3 hold requests, the limit is 3"):
        b.register(ALICE, (b"5" * 32,), b"t" * 32, 1, now=NOW)
    assert b.registration_for(ALICE, b"2" * 32, now=NOW) == reg
    assert b.registration_for(BOB, b"2" * 32, now=NOW) is None  # an HTLC from someone else is not held
    assert b.registration_for(ALICE, b"2" * 32, now=NOW + 3599) == reg
    assert b.registration_for(ALICE, b"2" * 32, now=NOW + 3600) is None
    assert len(b.expire_registrations(now=NOW + 3600)) == 3
    b.register(ALICE, (b"5" * 32,), b"t" * 32, 1, now=NOW + 3600)  # slots freed


def test_registered_hold_is_released_by_its_pid() -> None:
    """LightningRod end to end in the book: register, admit two MPP parts under the tag, release by pid."""
    b = book()
    reg = b.register(ALICE, (b"h" * 32,), PID, 2000, now=NOW)
    for key in ("p1", "p2"):
        found = b.registration_for(ALICE, b"h" * 32, now=NOW + 1)
        assert found is not None
        b.admit(key, ALICE, b"h" * 32, 1000, HEIGHT + 100, found.release_tag, now=NOW + 1, block_height=HEIGHT)
    assert {h.htlc_key for h in b.release(PID, now=NOW + 5, block_height=HEIGHT)} == {"p1", "p2"}
    assert reg.release_tag == b.key.tag(PID)
