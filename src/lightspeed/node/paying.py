"""The sender's pure helpers: the onion for a route, the failure it brought back, the graph to route on.

A route's hop ``i`` is the channel into ``hops[i].pubkey``; that node is told to forward
``hops[i + 1].amount_msat`` over ``hops[i + 1].short_channel_id`` with the expiry the next
hop needs, and the last hop gets the final payload (payment secret, ``total_msat``, custom
records). Expiries are built backwards from the final one, adding each forwarder's delta.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lightspeed.errors import LightspeedError, PaymentError
from lightspeed.onion.failure import (
    CorruptedFailure,
    FailureCode,
    FailureMessage,
    decode_failure_packet,
)
from lightspeed.onion.payload import HopPayload
from lightspeed.onion.sphinx import build_onion
from lightspeed.payments.attempts import FailureReport
from lightspeed.routing import ChannelGraph, DirectedChannel, Policy, Route


@dataclass(frozen=True)
class FinalPart:
    """What the payee's payload says beyond amount and expiry."""

    payment_secret: bytes | None = None
    total_msat: int | None = None
    custom_records: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True)
class RouteOnion:
    onion: bytes
    first_cltv_expiry: int
    shared_secrets: tuple[bytes, ...]


def onion_for_route(route: Route, payment_hash: bytes, final_cltv_expiry: int, final: FinalPart,
                    session_key: bytes) -> RouteOnion:
    hops = route.hops
    expiries = [final_cltv_expiry] * len(hops)
    for i in range(len(hops) - 2, -1, -1):
        expiries[i] = expiries[i + 1] + hops[i].cltv_expiry_delta
    payloads = []
    for i in range(len(hops) - 1):
        nxt = hops[i + 1]
        payloads.append(HopPayload(amt_to_forward_msat=nxt.amount_msat, outgoing_cltv_value=expiries[i + 1],
                                   short_channel_id=nxt.short_channel_id).to_bytes())
    last = hops[-1]
    payloads.append(HopPayload(amt_to_forward_msat=last.amount_msat, outgoing_cltv_value=final_cltv_expiry,
                               payment_secret=final.payment_secret,
                               total_msat=final.total_msat if final.payment_secret is not None else None,
                               custom_records=final.custom_records).to_bytes())
    built = build_onion(session_key, [h.pubkey for h in hops], payloads, payment_hash)
    return RouteOnion(built.packet.to_bytes(), expiries[0], built.shared_secrets)


@dataclass(frozen=True)
class HtlcOutcome:
    """How one HTLC we offered ended: a preimage, or the failure (reason packet or malformed code)."""

    preimage: bytes | None = None
    reason: bytes | None = None
    malformed_code: int | None = None
    sha256_of_onion: bytes = bytes(32)


class RouteFailed(PaymentError):
    """An HTLC sent along a given route failed: who reported it (route index, -1 for us) and why."""

    def __init__(self, report: FailureReport, failure: FailureMessage | None) -> None:
        where = "our node" if report.erring_index == -1 else (
            "an unknown hop" if report.erring_index is None else f"hop {report.erring_index}")
        try:
            name = FailureCode(report.code).name.lower()
        except ValueError:
            name = f"{report.code:#06x}"
        super().__init__(f"{name} from {where}")
        self.report, self.failure = report, failure


def decode_outcome(outcome: HtlcOutcome, shared_secrets: tuple[bytes, ...]) -> tuple[FailureReport, FailureMessage | None]:
    """Which hop failed and why. A malformed answer comes from our peer about the first hop's onion;
    no reason at all means the HTLC never left us (our first channel could not take it)."""
    if outcome.malformed_code is not None:
        return FailureReport(-1, outcome.malformed_code), None
    if outcome.reason is None:
        return FailureReport(-1, FailureCode.TEMPORARY_CHANNEL_FAILURE), None
    try:
        found = decode_failure_packet(shared_secrets, outcome.reason)
    except CorruptedFailure as exc:
        return FailureReport(exc.blamed_hop, FailureCode.TEMPORARY_NODE_FAILURE), None
    except LightspeedError:
        return FailureReport(None, FailureCode.TEMPORARY_NODE_FAILURE), None
    return FailureReport(found.hop_index, found.failure.code), found.failure


@dataclass(frozen=True)
class PayLimits:
    """What an operator allows one payment (``pay --max-fee-msat --outgoing-channel --max-parts``)."""

    max_fee_msat: int | None = None  # all parts together; each part gets its share of it
    outgoing_scid: int | None = None  # the first hop must be this channel of ours
    max_parts: int | None = None  # MPP: split into at most this many parts

    def part_fee_msat(self, part_msat: int, total_msat: int) -> int | None:
        """A part's share of the fee budget (rounded down: the parts never exceed it together)."""
        return None if self.max_fee_msat is None else self.max_fee_msat * part_msat // total_msat


NO_LIMITS = PayLimits()


@dataclass(frozen=True)
class LocalChannel:
    """One of our channels as the sender's router sees it: what we can send over it now."""

    short_channel_id: int
    peer_id: bytes
    sendable_msat: int


def routing_graph(base: ChannelGraph | None, node_id: bytes, own: Iterable[LocalChannel]) -> ChannelGraph:
    """``base`` without its view of our channels, plus ours as they really are (usable now, balance).

    Built on ``base``'s compiled index (ChannelGraph.with_own_channels), not recompiled per payment.
    """
    channels = [DirectedChannel(channel.short_channel_id, node_id, channel.peer_id, None,
                                Policy(0, 0, 0, 1, channel.sendable_msat))
                for channel in own if channel.sendable_msat > 0]
    return (base if base is not None else ChannelGraph()).with_own_channels(node_id, channels)


def first_preimage(results: Sequence[bytes | BaseException]) -> bytes:
    """The end of a payment sent in parts (``gather(..., return_exceptions=True)``): a preimage if any
    part got one; else a bug (not a PaymentError) is raised first, then the first part's failure."""
    for result in results:
        if isinstance(result, bytes):
            return result
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, PaymentError):
            raise result
    first = results[0]
    assert isinstance(first, PaymentError)
    raise first
