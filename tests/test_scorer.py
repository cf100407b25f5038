"""The probabilistic scorer: probabilities, learning from attempts, and forgetting over time."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.errors import DecodeError, UsageError
from lightspeed.routing import (
    DirectedChannel,
    Policy,
    Prior,
    ProbabilisticScorer,
    ScoringParameters,
    success_probability,
)

A, B = b"\x02" + bytes(31) + b"\x01", b"\x02" + bytes(31) + b"\x02"
CAPACITY_SAT = 1_000_000
HOUR = 3600.0


def channel(scid: int = 1, capacity_sat: int | None = CAPACITY_SAT, source: bytes = A,
            target: bytes = B) -> DirectedChannel:
    return DirectedChannel(scid, source, target, capacity_sat, Policy(1000, 100, 40))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Prior)), st.integers(1, 10**9), st.data())
def test_probability_is_a_probability_and_falls_with_the_amount(prior: Prior, capacity: int,
                                                                data: st.DataObject) -> None:
    lo = data.draw(st.integers(0, capacity))
    hi = data.draw(st.integers(lo, capacity))
    a1, a2 = sorted(data.draw(st.lists(st.integers(1, capacity + 10), min_size=2, max_size=2)))
    p1 = success_probability(a1, lo, hi, capacity, prior)
    p2 = success_probability(a2, lo, hi, capacity, prior)
    assert 0.0 <= p2 <= p1 <= 1.0
    assert success_probability(lo, lo, hi, capacity, prior) == 1.0
    assert success_probability(hi + 1, lo, hi, capacity, prior) == 0.0


def test_priors_differ_as_designed() -> None:
    capacity = 1_000_000
    # Uniform: half the capacity goes through half the time.
    assert success_probability(500_001, 0, capacity, capacity) == pytest.approx(0.5, abs=1e-5)
    # Bimodal: liquidity sits near the ends, so a mid-size amount is still a coin toss,
    # but a small amount is likelier and a large one unlikelier than under the uniform prior.
    small = success_probability(100_000, 0, capacity, capacity, Prior.BIMODAL)
    large = success_probability(900_000, 0, capacity, capacity, Prior.BIMODAL)
    assert small < success_probability(100_000, 0, capacity, capacity)
    assert large > success_probability(900_000, 0, capacity, capacity)
    assert success_probability(500_000, 0, capacity, capacity, Prior.BIMODAL) == pytest.approx(0.5, abs=1e-5)


def test_a_failure_caps_and_a_success_floors_the_liquidity() -> None:
    scorer, ch = ProbabilisticScorer(), channel()
    prior = scorer.probability(ch, 400_000_000, 0)
    assert 0.5 < prior < 0.7
    scorer.channel_failed(ch, 400_000_000, now=0)
    assert scorer.probability(ch, 400_000_000, 0) == 0.0
    assert scorer.probability(ch, 500_000_000, 0) == 0.0
    assert 0.0 < scorer.probability(ch, 200_000_000, 0) < prior  # below the cap: possible
    scorer.channel_forwarded(ch, 100_000_000, now=0)
    assert scorer.probability(ch, 100_000_000, 0) == 1.0
    # between the learned bounds the uniform model interpolates
    assert scorer.probability(ch, 250_000_000, 0) == pytest.approx(0.5, abs=1e-3)
    # the other direction of the same channel learned nothing
    assert scorer.probability(channel(source=B, target=A), 400_000_000, 0) == prior


def test_newer_evidence_wins_over_a_contradicting_bound() -> None:
    scorer, ch = ProbabilisticScorer(), channel()
    scorer.channel_failed(ch, 300_000_000, now=0)
    scorer.channel_forwarded(ch, 350_000_000, now=1)  # liquidity came back
    assert scorer.probability(ch, 350_000_000, 1) == 1.0
    assert scorer.probability(ch, 360_000_000, 1) > 0.0
    scorer.channel_failed(ch, 100_000_000, now=2)  # and left again
    assert scorer.probability(ch, 100_000_000, 2) == 0.0
    assert scorer.probability(ch, 50_000_000, 2) < 1.0


def test_learned_bounds_decay_towards_the_prior() -> None:
    params = ScoringParameters(half_life_s=HOUR)
    scorer, ch = ProbabilisticScorer(params), channel()
    capacity_msat = CAPACITY_SAT * 1000
    scorer.channel_failed(ch, 200_000_001, now=0)  # hi = 200,000,000
    scorer.channel_forwarded(ch, 100_000_000, now=0)
    key = next(iter(scorer.view(0).bounds))
    assert scorer.view(0).bounds[key] == (100_000_000, capacity_msat - 200_000_000)
    assert scorer.view(HOUR).bounds[key] == (50_000_000, (capacity_msat - 200_000_000) // 2)
    assert scorer.view(2 * HOUR).bounds[key] == (25_000_000, (capacity_msat - 200_000_000) // 4)
    earlier = [scorer.probability(ch, 300_000_000, t * HOUR) for t in range(6)]
    assert earlier == sorted(earlier) and earlier[0] == 0.0  # the channel becomes usable again
    assert scorer.view(100 * HOUR).bounds == {}  # forgotten entirely
    assert scorer.probability(ch, 300_000_000, 100 * HOUR) == ProbabilisticScorer().probability(ch, 300_000_000, 0)


def test_an_update_starts_from_the_decayed_bounds() -> None:
    scorer, ch = ProbabilisticScorer(ScoringParameters(half_life_s=HOUR)), channel()
    scorer.channel_forwarded(ch, 400_000_000, now=0)
    scorer.channel_forwarded(ch, 100_000_000, now=2 * HOUR)  # 400M decayed to 100M: max kept
    key = next(iter(scorer.view(2 * HOUR).bounds))
    assert scorer.view(2 * HOUR).bounds[key][0] == 100_000_000


def test_a_failed_node_is_avoided_then_trusted_again() -> None:
    params = ScoringParameters(node_failure_half_life_s=HOUR)
    scorer, ch = ProbabilisticScorer(params), channel()
    before = scorer.probability(ch, 1000, 0)
    scorer.node_failed(A, now=0)
    assert scorer.probability(ch, 1000, 0) == 0.0
    assert scorer.probability(ch, 1000, HOUR) == pytest.approx(before * 0.5, rel=1e-3)
    assert scorer.probability(channel(source=B, target=A), 1000, 0) == before  # A only forwards out
    assert scorer.probability(ch, 1000, 20 * HOUR) == before and scorer.view(20 * HOUR).node_probability == {}


def test_a_banned_channel_is_unusable_until_the_ban_ends() -> None:
    scorer, ch = ProbabilisticScorer(ScoringParameters(permanent_failure_ban_s=HOUR)), channel()
    scorer.channel_banned(ch, now=0)
    assert scorer.probability(ch, 1000, HOUR - 1) == 0.0
    assert scorer.probability(ch, 1000, HOUR) > 0.99


def test_unknown_capacity_uses_htlc_maximum_then_the_assumed_capacity() -> None:
    scorer = ProbabilisticScorer(ScoringParameters(unknown_capacity_msat=1_000_000))
    hinted = channel(capacity_sat=None)
    assert scorer.probability(hinted, 500_001, 0) == pytest.approx(0.5, abs=1e-5)
    capped = DirectedChannel(2, A, B, None, Policy(0, 0, 40, htlc_maximum_msat=2_000_000))
    assert scorer.probability(capped, 1_000_001, 0) == pytest.approx(0.5, abs=1e-5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fail", "ok", "node", "ban"]), st.integers(1, 10**9),
                          st.floats(0, 10 * HOUR)), max_size=12),
       st.floats(0, 20 * HOUR), st.sampled_from(list(Prior)))
def test_any_history_keeps_probabilities_ordered(history: list[tuple[str, int, float]], now: float,
                                                 prior: Prior) -> None:
    scorer, ch = ProbabilisticScorer(ScoringParameters(prior=prior)), channel()
    for kind, amount, at in sorted(history, key=lambda h: h[2]):
        if kind == "fail":
            scorer.channel_failed(ch, amount, at)
        elif kind == "ok":
            scorer.channel_forwarded(ch, amount, at)
        elif kind == "node":
            scorer.node_failed(A, at)
        else:
            scorer.channel_banned(ch, at)
    view = scorer.view(now)
    amounts = [1, 10**3, 10**6, 10**8, 5 * 10**8, 10**9]
    probabilities = [scorer.probability(ch, a, now) for a in amounts]
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert probabilities == sorted(probabilities, reverse=True)
    penalties = [view.penalty_msat(10**6, p) for p in (1.0, 0.9, 0.5, 0.1, 0.01)]
    assert penalties == sorted(penalties)
    assert penalties[0] == view.params.base_penalty_msat + (10**6 * view.params.base_penalty_amount_multiplier_msat >> 30)


def test_parameters_are_checked() -> None:
    with pytest.raises(UsageError, match="half lives"):
        ScoringParameters(half_life_s=0)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(Prior)), st.integers(0, CAPACITY_SAT * 1000), st.data())
def test_consistent_evidence_moves_probabilities_the_right_way(prior: Prior, liquidity: int,
                                                               data: st.DataObject) -> None:
    """Attempts against a hidden liquidity L: a failure (amount > L) never raises a probability,
    a success (amount <= L) never lowers one, decay only widens the bounds, and L stays possible."""
    scorer, ch = ProbabilisticScorer(ScoringParameters(prior=prior, half_life_s=HOUR)), channel()
    probes = [1, liquidity, liquidity + 1, *data.draw(st.lists(st.integers(1, CAPACITY_SAT * 1000), max_size=4))]
    now = 0.0
    for amount in data.draw(st.lists(st.integers(1, CAPACITY_SAT * 1000), min_size=1, max_size=8)):
        now += data.draw(st.sampled_from([0.0, 0.0, 600.0]))
        before = [scorer.probability(ch, a, now) for a in probes]
        if amount > liquidity:
            scorer.channel_failed(ch, amount, now)
            after = [scorer.probability(ch, a, now) for a in probes]
            assert all(b >= a - 1e-12 for a, b in zip(after, before, strict=True))
            assert scorer.probability(ch, amount, now) == 0.0
        else:
            scorer.channel_forwarded(ch, amount, now)
            after = [scorer.probability(ch, a, now) for a in probes]
            assert all(a >= b - 1e-12 for a, b in zip(after, before, strict=True))
            assert scorer.probability(ch, amount, now) == 1.0
        if liquidity > 0:
            assert scorer.probability(ch, liquidity, now) > 0.0  # the truth is never ruled out


def test_what_was_learned_survives_a_restart() -> None:
    scorer, ch = ProbabilisticScorer(), channel()
    scorer.channel_failed(ch, 400_000_000, now=10)
    scorer.channel_forwarded(ch, 100_000_000, now=20)
    scorer.node_failed(B, now=30)
    scorer.channel_banned(channel(scid=2), now=40)
    restored = ProbabilisticScorer.from_json(json.loads(json.dumps(scorer.to_json())))
    assert restored.view(50) == scorer.view(50)
    assert restored.to_json() == scorer.to_json()
    for bad, field in (([], "scorer"), ({"liquidity": [[1, 2, 3]]}, "liquidity"),
                       ({"liquidity": [[1, -2, 3, 0]]}, "liquidity[0]"),
                       ({"node_failures": [["zz", 1]]}, "node_failures[0]"),
                       ({"banned_until": [[1, "soon"]]}, "banned_until[0]")):
        with pytest.raises(DecodeError) as excinfo:
            ProbabilisticScorer.from_json(bad)
        assert excinfo.value.field == field
