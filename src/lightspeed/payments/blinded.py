"""Blinded payment paths (BOLT 4 "Route Blinding"), sans-IO: the recipient's builder and the payer's onion.

The recipient hides where it sits behind an *introduction node*: it chooses the nodes from
there to itself, the fees and CLTV delta each must apply (``payment_relay``, taken from their
channel policies), the limits of the path (``payment_constraints``), and seals them hop by hop
(:func:`~lightspeed.onion.blinding.create_blinded_path`). The payer only learns the aggregate
(:class:`~lightspeed.offers.BlindedPayInfo`) and builds one onion: a normal route to the
introduction node, then the blinded hops (:func:`blinded_onion`).

Dummy hops are the recipient itself, told to "forward" to itself with zero fees: the payer
cannot tell them from real hops, every ``encrypted_data_tlv`` is padded to one length, and
the recipient peels them on receipt. The final hop's ``path_id`` is a secret of the
recipient's (the payment secret of the payment it is for): a path made by anyone else, or
used for another payment, does not carry it and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lightspeed.errors import UsageError
from lightspeed.offers.tlv_fields import BlindedPayInfo
from lightspeed.onion.blinding import (
    BlindedPath,
    EncryptedDataTlv,
    PaymentConstraints,
    PaymentRelay,
    aggregate_payment_relay,
    create_blinded_path,
)
from lightspeed.onion.payload import HopPayload
from lightspeed.onion.sphinx import build_onion
from lightspeed.routing import Route

_ZERO_RELAY = PaymentRelay(0, 0, 0)


@dataclass(frozen=True)
class RelayHop:
    """A node of the path before the recipient, and the channel it forwards on (to the next node).

    The fees, delta and HTLC range are that channel's policy in the direction away from
    ``node_id`` (its ``channel_update``): what the node would charge anyway.
    """

    node_id: bytes
    short_channel_id: int
    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int = 0
    htlc_maximum_msat: int | None = None

    @property
    def relay(self) -> PaymentRelay:
        return PaymentRelay(self.cltv_expiry_delta, self.fee_proportional_millionths, self.fee_base_msat)


@dataclass(frozen=True)
class PathTerms:
    """The recipient's side of one path: who it is, what authenticates it, its limits."""

    recipient: bytes
    #: private to the recipient: proves the path is its own and names the payment it is for
    path_id: bytes
    #: block height after which the final hop refuses the path (BOLT 4 ``max_cltv_expiry`` of the final node)
    expiry_height: int
    min_final_cltv_expiry_delta: int
    htlc_minimum_msat: int = 1
    htlc_maximum_msat: int = (1 << 64) - 1


def build_payment_path(session_key: bytes, relays: Sequence[RelayHop], terms: PathTerms,
                       dummy_hops: int = 0) -> tuple[BlindedPath, BlindedPayInfo]:
    """A blinded path from ``relays[0]`` (the introduction node, or the recipient if none) to us.

    ``session_key`` is ``e_0`` (32 random bytes in real use, fixed in tests).
    """
    if dummy_hops < 0 or len(relays) + dummy_hops + 1 > 20:
        raise UsageError("dummy_hops: a blinded payment path has at most 20 hops")
    hop_relays = [r.relay for r in relays] + [_ZERO_RELAY] * dummy_hops
    # BOLT #4: MUST set `payment_constraints` for each non-final node: `max_cltv_expiry` starting
    # from the final node's `max_cltv_expiry`, adding its `min_final_cltv_expiry_delta`, then
    # adding `payment_relay.cltv_expiry_delta` at each hop; `htlc_minimum_msat` to the largest
    # minimum HTLC value the nodes will allow.
    minimum = max([terms.htlc_minimum_msat, *(r.htlc_minimum_msat for r in relays)])
    final_max = terms.expiry_height + terms.min_final_cltv_expiry_delta
    maxima = [final_max] * (len(hop_relays) + 1)
    for i in range(len(hop_relays) - 1, -1, -1):
        maxima[i] = maxima[i + 1] + hop_relays[i].cltv_expiry_delta
    payloads: list[EncryptedDataTlv] = []
    for i, relay in enumerate(hop_relays):
        real = i < len(relays)
        payloads.append(EncryptedDataTlv(
            # BOLT #4: MUST include exactly one of `short_channel_id` or `next_node_id` for each
            # non-final node, and its `payment_relay`.
            short_channel_id=relays[i].short_channel_id if real else None,
            next_node_id=None if real else terms.recipient,
            payment_relay=relay, payment_constraints=PaymentConstraints(maxima[i], minimum)))
    payloads.append(EncryptedDataTlv(path_id=terms.path_id, payment_constraints=PaymentConstraints(final_max, minimum)))
    payloads = pad_to_one_length(payloads)
    nodes = [r.node_id for r in relays] + [terms.recipient] * (dummy_hops + 1)
    path = create_blinded_path(session_key, nodes, payloads)
    # BOLT #4: MUST compute the total fees and CLTV delta of the route and communicate them.
    total = aggregate_payment_relay(hop_relays, terms.min_final_cltv_expiry_delta)
    maximum = min([terms.htlc_maximum_msat, *(r.htlc_maximum_msat for r in relays if r.htlc_maximum_msat)])
    info = BlindedPayInfo(total.fee_base_msat, total.fee_proportional_millionths, total.cltv_expiry_delta,
                          minimum, maximum)
    return path, info


def pad_to_one_length(payloads: Sequence[EncryptedDataTlv]) -> list[EncryptedDataTlv]:
    """BOLT #4: SHOULD add padding data to ensure all `encrypted_data_tlv[i]` have the same length.

    Every payload gets a ``padding`` record (type 1, one length byte), so one target fits all
    as long as the longest stays under 253 bytes (a one-byte BigSize length).
    """
    lengths = [len(p.to_bytes()) for p in payloads]
    target = max(lengths) + 2
    padded = [replace(p, padding=bytes(target - n - 2)) for p, n in zip(payloads, lengths, strict=True)]
    if len({len(p.to_bytes()) for p in padded}) != 1:
        raise UsageError("encrypted_data_tlv too long to pad to one length")
    return padded


def amount_at_introduction(info: BlindedPayInfo, amount_msat: int) -> int:
    """What the introduction node must receive for ``amount_msat`` to reach the recipient.

    BOLT 12 ``blinded_payinfo``: ``fee_base_msat + amount * fee_proportional_millionths / 1000000``.
    """
    return amount_msat + info.fee_base_msat + amount_msat * info.fee_proportional_millionths // 1_000_000


@dataclass(frozen=True)
class BlindedOnion:
    onion: bytes
    first_amount_msat: int
    first_cltv_expiry: int
    #: one per onion layer (the route's hops, then the blinded hops after the introduction node)
    shared_secrets: tuple[bytes, ...]


def blinded_onion(route: Route, path: BlindedPath, info: BlindedPayInfo, amount_msat: int, total_msat: int,
                  final_cltv_expiry: int, payment_hash: bytes, session_key: bytes,
                  final_records: tuple[tuple[int, bytes], ...] = ()) -> BlindedOnion:
    """The onion of one part: ``route`` from us to the introduction node, then ``path``.

    ``route`` must end at ``path.first_node_id`` carrying :func:`amount_at_introduction`.
    ``final_records``: extra records of the recipient's payload (the payer's keysend preimage
    when paying a static invoice, as the async-payments draft allows).
    ``final_cltv_expiry`` is the current height plus any offset: the recipient's payload says it,
    the introduction node's HTLC adds the path's whole delta (``info.cltv_expiry_delta``).
    """
    hops = route.hops
    intro = path.first_node_id
    if len(intro) != 33:
        raise UsageError("first_node_id: a sciddir introduction node is not supported; a node id is needed")
    if not hops or hops[-1].pubkey != intro:
        raise UsageError("route: must end at the blinded path's introduction node")
    if hops[-1].amount_msat != amount_at_introduction(info, amount_msat):
        raise UsageError("route: must deliver the amount plus the path's fees to the introduction node")
    expiries = [final_cltv_expiry + info.cltv_expiry_delta] * len(hops)
    for i in range(len(hops) - 2, -1, -1):
        expiries[i] = expiries[i + 1] + hops[i].cltv_expiry_delta
    payloads = [HopPayload(amt_to_forward_msat=hops[i + 1].amount_msat, outgoing_cltv_value=expiries[i + 1],
                           short_channel_id=hops[i + 1].short_channel_id).to_bytes() for i in range(len(hops) - 1)]
    last = len(path.hops) - 1
    for i, hop in enumerate(path.hops):
        # BOLT #4: the writer MUST include the `encrypted_recipient_data` for every node inside a
        # blinded route; for the first node, the `path_key` provided by the recipient in
        # `current_path_key`; for the final node `amt_to_forward`, `outgoing_cltv_value` (the
        # current block height as a baseline) and `total_amount_msat`; no other field.
        payloads.append(HopPayload(
            encrypted_recipient_data=hop.encrypted_recipient_data,
            current_path_key=path.first_path_key if i == 0 else None,
            amt_to_forward_msat=amount_msat if i == last else None,
            outgoing_cltv_value=final_cltv_expiry if i == last else None,
            total_amount_msat=total_msat if i == last else None,
            custom_records=final_records if i == last else ()).to_bytes())
    # The introduction node is reached by its real id; every later hop by its blinded id.
    keys = [h.pubkey for h in hops] + [h.blinded_node_id for h in path.hops[1:]]
    built = build_onion(session_key, keys, payloads, payment_hash)
    return BlindedOnion(built.packet.to_bytes(), hops[0].amount_msat, expiries[0], built.shared_secrets)
