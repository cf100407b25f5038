"""Channel establishment v1: the receiver's checks on ``open_channel`` and ``accept_channel``.

Every "MUST fail the channel" of BOLT 2 for these messages is enforced here and
quoted; the "MAY fail" ones are decisions of a :class:`ChannelPolicy`, so a
node operator can tune them. A failed check raises
:class:`~lightspeed.channel.state.ChannelFailure` naming the rule, which the node
turns into an ``error`` for the temporary channel id (BOLT 1: failing a channel is
sending an error for it). Pure functions: the chain hash and the fee estimate are inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.channel.commitment import commitment_fee_sat
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT
from lightspeed.channel.state import ChannelFailure
from lightspeed.codec.features import Features
from lightspeed.codec.generated import AcceptChannel, OpenChannel
from lightspeed.crypto.secp256k1 import is_valid_pubkey

MAX_ACCEPTED_HTLCS = 483
MIN_DUST_LIMIT_SAT = 354  # BOLT 2 / BOLT 3 "Dust Limits"
LARGE_CHANNEL_SAT = 1 << 24

STATIC_REMOTEKEY_BIT = 12
ANCHORS_BIT = 22
SCID_ALIAS_BIT = 46
ZEROCONF_BIT = 50


@dataclass(frozen=True)
class ChannelType:
    """The channel_type TLV: a feature bitmap naming the commitment format (BOLT 2 "Defined Channel Types")."""

    bits: frozenset[int]

    @classmethod
    def from_bytes(cls, data: bytes) -> ChannelType:
        return cls(Features.from_bytes(data).bits)

    def to_bytes(self) -> bytes:
        return Features(self.bits).to_bytes()

    @property
    def anchors(self) -> bool:
        return ANCHORS_BIT in self.bits


STATIC_REMOTEKEY = ChannelType(frozenset({STATIC_REMOTEKEY_BIT}))
ANCHORS = ChannelType(frozenset({STATIC_REMOTEKEY_BIT, ANCHORS_BIT}))
# BOLT 2: the defined types are these two bases, each optionally with scid_alias and/or zeroconf.
_BASES = (STATIC_REMOTEKEY.bits, ANCHORS.bits)
_OPTIONAL = frozenset({SCID_ALIAS_BIT, ZEROCONF_BIT})


def is_defined_channel_type(channel_type: ChannelType) -> bool:
    return any(base <= channel_type.bits and channel_type.bits - base <= _OPTIONAL for base in _BASES)


def choose_channel_type(local: Features, remote: Features) -> ChannelType:
    """The commitment format to propose to a peer, from both ``init`` feature sets.

    option_anchors when both support it (the superior format, BOLT 2 rationale), else
    option_static_remotekey (ASSUMED: every peer has it). BOLT #2: the sender SHOULD NOT
    set channel_type to a type containing a feature which was not negotiated.
    """
    return ANCHORS if local.supports("option_anchors") and remote.supports("option_anchors") else STATIC_REMOTEKEY


def implied_channel_type(local: Features, remote: Features) -> ChannelType | None:
    """The type an open without ``channel_type`` means, or None when the TLV is mandatory.

    A peer that offered option_channel_type must send the TLV (BOLT #2: if the message
    doesn't include a channel_type: MUST fail the channel). A peer that did not offer it
    follows the revisions before option_channel_type was ASSUMED, which define: "if
    option_anchors was negotiated: the channel_type is option_anchors and
    option_static_remotekey; otherwise: the channel_type is option_static_remotekey".
    """
    if remote.supports("option_channel_type"):
        return None
    return choose_channel_type(local, remote)


@dataclass(frozen=True)
class ChannelPolicy:
    """What this node accepts from a peer opening a channel (the spec's MAY-fail knobs)."""

    chain_hash: bytes
    min_funding_sat: int = 20_000
    max_to_self_delay: int = 2016
    max_minimum_depth: int = 144
    min_feerate_per_kw: int = 253
    max_feerate_per_kw: int = 100_000
    max_dust_limit_sat: int = 546 * 10
    max_htlc_minimum_msat: int = 1_000_000
    min_max_accepted_htlcs: int = 5
    large_channels: bool = False
    channel_types: tuple[ChannelType, ...] = (ANCHORS, STATIC_REMOTEKEY)
    accept_zeroconf: bool = False


def _fail(reason: str, channel_id: bytes) -> ChannelFailure:
    return ChannelFailure(reason, channel_id)


def _check_basepoints(msg: OpenChannel | AcceptChannel, cid: bytes) -> None:
    for name in ("funding_pubkey", "revocation_basepoint", "payment_basepoint", "delayed_payment_basepoint",
                 "htlc_basepoint", "first_per_commitment_point"):
        # BOLT #2: MUST fail the channel if funding_pubkey, revocation_basepoint, htlc_basepoint,
        # payment_basepoint, or delayed_payment_basepoint are not valid secp256k1 pubkeys in compressed format.
        if not is_valid_pubkey(getattr(msg, name)):
            raise _fail(f"{name} is not a valid compressed secp256k1 public key", cid)


def _channel_type(msg: OpenChannel | AcceptChannel, cid: bytes, implied: ChannelType | None) -> ChannelType:
    record = msg.tlvs.get("channel_type")
    if record is None:
        if implied is not None:  # a peer without option_channel_type: see implied_channel_type
            return implied
        # BOLT #2: if the message doesn't include a channel_type: MUST fail the channel.
        raise _fail("no channel_type (the peer offered option_channel_type)", cid)
    return ChannelType.from_bytes(record["type"])


def _check_common(msg: OpenChannel | AcceptChannel, policy: ChannelPolicy, cid: bytes) -> None:
    # BOLT #2: MUST fail the channel if to_self_delay is unreasonably large.
    if msg.to_self_delay > policy.max_to_self_delay:
        raise _fail(f"to_self_delay {msg.to_self_delay} is above our limit of {policy.max_to_self_delay}", cid)
    # BOLT #2: MUST fail the channel if max_accepted_htlcs is greater than 483.
    if msg.max_accepted_htlcs > MAX_ACCEPTED_HTLCS:
        raise _fail(f"max_accepted_htlcs {msg.max_accepted_htlcs} is greater than 483", cid)
    if msg.max_accepted_htlcs < policy.min_max_accepted_htlcs:
        raise _fail(f"max_accepted_htlcs {msg.max_accepted_htlcs} is too small", cid)
    # BOLT #2: MUST fail if dust_limit_satoshis is smaller than 354 satoshis.
    if msg.dust_limit_satoshis < MIN_DUST_LIMIT_SAT:
        raise _fail(f"dust_limit_satoshis {msg.dust_limit_satoshis} is below 354", cid)
    if msg.dust_limit_satoshis > policy.max_dust_limit_sat:
        raise _fail(f"dust_limit_satoshis {msg.dust_limit_satoshis} is too large", cid)
    if msg.htlc_minimum_msat > policy.max_htlc_minimum_msat:
        raise _fail(f"htlc_minimum_msat {msg.htlc_minimum_msat} is too large", cid)
    _check_basepoints(msg, cid)


def check_open_channel(msg: OpenChannel, policy: ChannelPolicy, local_features: Features,
                       implied: ChannelType | None = None) -> ChannelType:
    """The receiver's checks on ``open_channel``; returns the channel type to use.

    ``implied`` is :func:`implied_channel_type` for this peer: the type of an open without
    the channel_type TLV (None: the TLV is required). A type is suitable when it is one of
    ``policy.channel_types`` (the node lists ANCHORS there only if it offers option_anchors).
    """
    cid = msg.temporary_channel_id
    # BOLT #2: MUST fail the channel if the chain_hash value is set to a hash of a chain
    # that is unknown to the receiver.
    if msg.chain_hash != policy.chain_hash:
        raise _fail("open_channel is for another chain", cid)
    # BOLT #2: MUST fail if push_msat is greater than funding_satoshis * 1000.
    if msg.push_msat > msg.funding_satoshis * 1000:
        raise _fail("push_msat is greater than the funding amount", cid)
    # BOLT #2: MUST fail if funding_satoshis >= 2^24 and the receiver does not support
    # option_support_large_channel.
    if msg.funding_satoshis >= LARGE_CHANNEL_SAT and not policy.large_channels:
        raise _fail("funding_satoshis needs option_support_large_channel", cid)
    if msg.funding_satoshis < policy.min_funding_sat:
        raise _fail(f"funding_satoshis {msg.funding_satoshis} is below our minimum {policy.min_funding_sat}", cid)
    # BOLT #2: MUST fail if it considers feerate_per_kw too small or unreasonably large.
    if not policy.min_feerate_per_kw <= msg.feerate_per_kw <= policy.max_feerate_per_kw:
        raise _fail(f"feerate_per_kw {msg.feerate_per_kw} is outside "
                    f"{policy.min_feerate_per_kw}..{policy.max_feerate_per_kw}", cid)
    # BOLT #2: MUST fail if dust_limit_satoshis is greater than channel_reserve_satoshis.
    if msg.dust_limit_satoshis > msg.channel_reserve_satoshis:
        raise _fail("dust_limit_satoshis is greater than channel_reserve_satoshis", cid)
    _check_common(msg, policy, cid)
    channel_type = _channel_type(msg, cid, implied)
    # BOLT #2: MUST fail the channel if the channel_type is not suitable.
    if not is_defined_channel_type(channel_type) or not any(
        channel_type.bits - _OPTIONAL == t.bits for t in policy.channel_types
    ):
        raise _fail(f"channel_type {sorted(channel_type.bits)} is not one we support", cid)
    # BOLT #2: MUST fail if channel_type includes option_zeroconf and it does not trust the sender.
    if ZEROCONF_BIT in channel_type.bits and not policy.accept_zeroconf:
        raise _fail("zero-conf channels are not accepted from this peer", cid)
    # BOLT #2: MUST fail if the funder's amount for the initial commitment transaction is not
    # sufficient for full fee payment.
    funder_sat = msg.funding_satoshis - msg.push_msat // 1000
    fee = commitment_fee_sat(msg.feerate_per_kw, 0, channel_type.anchors)
    if channel_type.anchors:
        fee += 2 * ANCHOR_OUTPUT_SAT
    if funder_sat < fee:
        raise _fail(f"the funder's {funder_sat} sat cannot pay the initial commitment fee of {fee} sat", cid)
    # BOLT #2: MUST fail if both to_local and to_remote amounts for the initial commitment
    # transaction are less than or equal to channel_reserve_satoshis.
    to_funder, to_fundee = funder_sat - fee, msg.push_msat // 1000
    if max(to_funder, to_fundee) <= msg.channel_reserve_satoshis:
        raise _fail("both initial balances are at or below channel_reserve_satoshis", cid)
    return channel_type


def check_accept_channel(accept: AcceptChannel, sent: OpenChannel, policy: ChannelPolicy,
                         implied: ChannelType | None = None) -> ChannelType:
    """The funder's checks on ``accept_channel`` for the ``open_channel`` it sent.

    ``implied`` as for :func:`check_open_channel`: a peer without option_channel_type may
    answer without the TLV, and the type is then the one implied by both features.
    """
    cid = sent.temporary_channel_id
    if accept.temporary_channel_id != cid:
        raise _fail("accept_channel for another temporary_channel_id", cid)
    # BOLT #2: MAY fail if minimum_depth is unreasonably large.
    if accept.minimum_depth > policy.max_minimum_depth:
        raise _fail(f"minimum_depth {accept.minimum_depth} is unreasonably large", cid)
    # BOLT #2: if channel_reserve_satoshis is less than dust_limit_satoshis within the
    # open_channel message: MUST fail the channel.
    if accept.channel_reserve_satoshis < sent.dust_limit_satoshis:
        raise _fail("channel_reserve_satoshis is below our dust_limit_satoshis", cid)
    # BOLT #2: if channel_reserve_satoshis from the open_channel message is less than
    # dust_limit_satoshis: MUST fail the channel.
    if sent.channel_reserve_satoshis < accept.dust_limit_satoshis:
        raise _fail("dust_limit_satoshis is above the reserve we asked for", cid)
    _check_common(accept, policy, cid)
    channel_type = _channel_type(accept, cid, implied)
    # BOLT #2: if channel_type does not match the channel_type from open_channel: MUST fail.
    sent_type = sent.tlvs.get("channel_type")
    proposed = implied if sent_type is None else ChannelType.from_bytes(sent_type["type"])
    if proposed != channel_type:
        raise _fail(f"channel_type {sorted(channel_type.bits)} differs from the one in open_channel", cid)
    return channel_type
