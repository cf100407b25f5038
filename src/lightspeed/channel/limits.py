"""BOLT 2 limits on what each side may add to a channel: one rule book for both directions.

Theory of operation. Every ``update_add_htlc`` must leave both commitments payable and
within what the receiver agreed to at opening:

* the amount is at least the receiver's ``htlc_minimum_msat``; the HTLCs the offerer has
  in the receiver's commitment stay within the receiver's ``max_accepted_htlcs`` and
  ``max_htlc_value_in_flight_msat``;
* the offerer keeps its channel reserve (set by the other side) after the amount and, if
  it is the funder, after the commitment fee and the two anchors too;
* when the non-funder offers, the funder must still pay the larger fee above its reserve.

:func:`offer_problem` answers for either offerer, so the same rule decides whether *we*
may offer (a refusal is our caller's error) and whether the *peer* broke a rule (the
channel fails). :func:`max_offer_msat` is the exact largest amount it accepts; the router,
the forwarding decision and ``add_htlc`` all use it, so they never disagree.

Fees follow BOLT 3: an HTLC below its commitment's dust limit plus its second-stage fee is
trimmed and adds no weight, so what an HTLC costs the funder depends on its amount, on
whose commitment it is in (each has its owner's dust limit) and on its direction there
(offered: HTLC-timeout fee; received: HTLC-success fee; both 0 with anchors). Cost only
grows with the amount, so the amounts an offerer may send form one interval from the
receiver's minimum up, which :func:`max_offer_msat` finds by checking each trimming band.

Pure: the views (each side's commitment with the adds not yet signed, from
``HtlcLog.commitment(owner, pending=True)``) and the agreed config are the only inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from lightspeed.channel.commitment import (
    commitment_fee_sat,
    htlc_success_fee_sat,
    htlc_timeout_fee_sat,
)
from lightspeed.channel.htlc_log import CommitmentView, Side
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT

if TYPE_CHECKING:
    from lightspeed.channel.state import ChannelConfig

#: BOLT 2: the funder's "fee spike buffer" should handle twice the current feerate_per_kw.
FEE_SPIKE_MULTIPLE = 2

Views = Mapping[Side, CommitmentView]  # each side's commitment (pending adds included), by owner


def funder(config: ChannelConfig) -> Side:
    return Side.LOCAL if config.local_is_funder else Side.REMOTE


def reserve_msat(config: ChannelConfig, party: Side) -> int:
    """What ``party`` must keep in the channel (the other side chose it)."""
    return 1000 * (config.reserve_for_local_sat if party is Side.LOCAL else config.reserve_from_remote_sat)


def _dust_limit_sat(config: ChannelConfig, owner: Side) -> int:
    return config.local_dust_limit_sat if owner is Side.LOCAL else config.remote_dust_limit_sat


def _minimum_msat(config: ChannelConfig, receiver: Side) -> int:
    return max(1, config.htlc_minimum_msat if receiver is Side.LOCAL else config.remote_htlc_minimum_msat)


def _max_accepted(config: ChannelConfig, receiver: Side) -> int:
    return config.max_accepted_htlcs if receiver is Side.LOCAL else config.remote_max_accepted_htlcs


def _max_in_flight_msat(config: ChannelConfig, receiver: Side) -> int:
    return (config.max_htlc_value_in_flight_msat if receiver is Side.LOCAL
            else config.remote_max_htlc_value_in_flight_msat)


def _balance_msat(view: CommitmentView, party: Side) -> int:
    return view.to_local_msat if view.owner is party else view.to_remote_msat


def untrimmed_from_msat(config: ChannelConfig, owner: Side, offerer: Side, feerate_per_kw: int) -> int:
    """The smallest HTLC from ``offerer`` that gets an output in ``owner``'s commitment.

    BOLT #3: an HTLC is trimmed if its amount, rounded down to satoshi, minus the fee of its
    second-stage transaction (HTLC-timeout if offered by the owner, else HTLC-success) is
    below the owner's dust_limit_satoshis.
    """
    anchors = config.anchors
    stage = (htlc_timeout_fee_sat(feerate_per_kw, anchors) if offerer is owner
             else htlc_success_fee_sat(feerate_per_kw, anchors))
    return 1000 * (_dust_limit_sat(config, owner) + stage)


def _untrimmed(config: ChannelConfig, view: CommitmentView, feerate_per_kw: int) -> int:
    return sum(1 for h in view.htlcs
               if h.amount_msat >= untrimmed_from_msat(config, view.owner, h.offerer, feerate_per_kw))


def funder_cost_msat(config: ChannelConfig, untrimmed_htlcs: int, feerate_per_kw: int) -> int:
    """BOLT #3: what the funder pays out of its balance: the base fee, and with anchors both anchors."""
    fee = commitment_fee_sat(feerate_per_kw, untrimmed_htlcs, config.anchors)
    return 1000 * (fee + (2 * ANCHOR_OUTPUT_SAT if config.anchors else 0))


def _headroom_msat(config: ChannelConfig, views: Views, offerer: Side, amount_msat: int,
                   fee_spike_buffer: bool) -> int:
    """The most ``offerer`` can put into an HTLC that costs the fees an HTLC of ``amount_msat`` costs.

    The amount matters only through trimming (which commitments it adds an output to).
    """
    payer = funder(config)
    room: int | None = None
    for view in views.values():
        spare = _balance_msat(view, offerer) - reserve_msat(config, offerer)
        if offerer is payer:
            feerate = view.feerate_per_kw
            htlcs = _untrimmed(config, view, feerate)
            htlcs += amount_msat >= untrimmed_from_msat(config, view.owner, offerer, feerate)
            cost = funder_cost_msat(config, htlcs, feerate)
            if fee_spike_buffer:
                # BOLT #2: the funder SHOULD NOT offer amount_msat if its remaining balance would not
                # pay the commitment fee with a future additional non-dust HTLC while keeping its
                # reserve; this "fee spike buffer" should handle twice the current feerate_per_kw.
                cost = max(cost, funder_cost_msat(config, htlcs + 1, FEE_SPIKE_MULTIPLE * feerate))
            spare -= cost
        room = spare if room is None else min(room, spare)
    assert room is not None
    return room


def _funder_short_msat(config: ChannelConfig, views: Views, offerer: Side, amount_msat: int) -> int:
    """By how much the funder, if it is not ``offerer``, falls short of the fee the HTLC adds."""
    payer = funder(config)
    if offerer is payer:
        return 0
    short = 0
    for view in views.values():
        feerate = view.feerate_per_kw
        if amount_msat < untrimmed_from_msat(config, view.owner, offerer, feerate):
            continue  # trimmed here: the fee does not change
        cost = funder_cost_msat(config, _untrimmed(config, view, feerate) + 1, feerate)
        short = max(short, cost + reserve_msat(config, payer) - _balance_msat(view, payer))
    return short


_WORDS = {  # (the offerer's, the receiver's) as an error message names them
    Side.LOCAL: ("our", "the peer's"),
    Side.REMOTE: ("the peer's", "our"),
}


def offer_problem(config: ChannelConfig, views: Views, offerer: Side, amount_msat: int, *,
                  fee_spike_buffer: bool = False, as_receiver: bool = False) -> str | None:
    """Why ``offerer`` must not offer an HTLC of ``amount_msat`` now, or None if it may.

    ``views`` excludes the HTLC itself. ``fee_spike_buffer`` adds BOLT 2's SHOULD for our own
    offers. ``as_receiver`` holds the peer's offer only to the rules whose breach BOLT 2 tells
    the receiver to fail the channel for (the non-funder's fee courtesy is not one of them).
    """
    receiver = offerer.other
    who, whose = _WORDS[offerer]
    minimum = _minimum_msat(config, receiver)
    # BOLT #2: a sending node MUST offer amount_msat greater than 0 and MUST NOT offer amount_msat
    # below the receiving node's htlc_minimum_msat. A receiving node, receiving an amount_msat
    # equal to 0 or less than its own htlc_minimum_msat: SHOULD ... send an error and fail the channel.
    if amount_msat < minimum:
        return f"HTLC of {amount_msat} msat is below {whose} htlc_minimum_msat ({minimum} msat)"
    # BOLT #2: the funder MUST NOT offer amount_msat if it then cannot pay the fee for either
    # commitment at the current feerate_per_kw while maintaining its channel reserve, and with
    # option_anchors MUST additionally pay both anchors above its reserve. A receiving node,
    # receiving an amount_msat the sender cannot afford (while maintaining its channel reserve
    # and any anchor costs): SHOULD ... send an error and fail the channel.
    room = _headroom_msat(config, views, offerer, amount_msat, fee_spike_buffer)
    if amount_msat > room:
        reserve = reserve_msat(config, offerer) // 1000
        its = "our" if offerer is Side.LOCAL else "its"
        return (f"HTLC of {amount_msat} msat exceeds {who} balance above {its} reserve: "
                f"{max(room, 0)} msat spendable above a reserve of {reserve} sat")
    theirs = views[receiver]  # the receiver's commitment: where its limits count the offerer's HTLCs
    offered = [h for h in theirs.htlcs if h.offerer is offerer]
    # BOLT #2: if the result would be offering more than the remote's max_accepted_htlcs HTLCs in
    # the remote commitment transaction: MUST NOT add an HTLC (receiver: SHOULD fail the channel).
    accepted = _max_accepted(config, receiver)
    if len(offered) >= accepted:
        return f"more than max_accepted_htlcs: {whose} side accepts at most {accepted} HTLCs"
    # BOLT #2: if the total value of offered HTLCs would exceed the remote's
    # max_htlc_value_in_flight_msat: MUST NOT add an HTLC (receiver: SHOULD fail the channel).
    in_flight = sum(h.amount_msat for h in offered)
    limit = _max_in_flight_msat(config, receiver)
    if in_flight + amount_msat > limit:
        return (f"HTLC of {amount_msat} msat with {in_flight} msat in flight exceeds {whose} "
                f"max_htlc_value_in_flight_msat ({limit} msat)")
    # BOLT #2: the node not responsible for the fee SHOULD NOT offer amount_msat if, once added,
    # the funder cannot pay the fee for the updated commitments while maintaining its reserve.
    # The receiver has no rule for it: the commitment stays valid (the fee eats into the funder's output).
    short = 0 if as_receiver else _funder_short_msat(config, views, offerer, amount_msat)
    if short > 0:
        return (f"HTLC of {amount_msat} msat leaves the funder {short} msat short of the commitment fee "
                "above its reserve")
    return None


def max_offer_msat(config: ChannelConfig, views: Views, offerer: Side, *, fee_spike_buffer: bool = False) -> int:
    """The largest amount :func:`offer_problem` accepts from ``offerer`` now (0 if none)."""
    receiver = offerer.other
    minimum = _minimum_msat(config, receiver)
    theirs = views[receiver]
    offered = [h for h in theirs.htlcs if h.offerer is offerer]
    flight_room = _max_in_flight_msat(config, receiver) - sum(h.amount_msat for h in offered)
    # Bands of amounts with the same trimming in every commitment: a constant cost in each.
    thresholds = {untrimmed_from_msat(config, v.owner, offerer, v.feerate_per_kw) for v in views.values()}
    bounds = sorted({minimum} | {b for b in thresholds if b > minimum})
    for i in reversed(range(len(bounds))):
        low = bounds[i]
        high = bounds[i + 1] - 1 if i + 1 < len(bounds) else flight_room
        best = min(high, flight_room, _headroom_msat(config, views, offerer, low, fee_spike_buffer))
        if best >= low and offer_problem(config, views, offerer, best, fee_spike_buffer=fee_spike_buffer) is None:
            return best
    return 0


def advertised_htlc_range(config: ChannelConfig, minimum_msat: int, maximum_msat: int) -> tuple[int, int]:
    """The HTLC amounts our channel_update may promise for this channel, given our policy's range.

    BOLT #7: htlc_minimum_msat is the minimum HTLC value the channel peer will accept, and
    htlc_maximum_msat MUST NOT exceed the channel capacity (and SHOULD NOT the peer's
    max_htlc_value_in_flight_msat).
    """
    high = min(maximum_msat, config.funding_sat * 1000, config.remote_max_htlc_value_in_flight_msat)
    return min(max(minimum_msat, config.remote_htlc_minimum_msat), high), high
