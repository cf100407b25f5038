"""Typed wire messages, generated from the spec-extracted schemas by tools/gen_messages.py.

Do not edit: change the schemas or the generator, then run it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from lightspeed.codec.message_base import WireMessage


@dataclass(frozen=True)
class Stfu(WireMessage):
    """``stfu`` (2)."""

    TYPE: ClassVar[int] = 2
    NAME: ClassVar[str] = "stfu"
    channel_id: bytes
    initiator: int


@dataclass(frozen=True)
class PeerStorage(WireMessage):
    """``peer_storage`` (7)."""

    TYPE: ClassVar[int] = 7
    NAME: ClassVar[str] = "peer_storage"
    blob: bytes


@dataclass(frozen=True)
class PeerStorageRetrieval(WireMessage):
    """``peer_storage_retrieval`` (9)."""

    TYPE: ClassVar[int] = 9
    NAME: ClassVar[str] = "peer_storage_retrieval"
    blob: bytes


@dataclass(frozen=True)
class OpenChannel(WireMessage):
    """``open_channel`` (32)."""

    TYPE: ClassVar[int] = 32
    NAME: ClassVar[str] = "open_channel"
    chain_hash: bytes
    temporary_channel_id: bytes
    funding_satoshis: int
    push_msat: int
    dust_limit_satoshis: int
    max_htlc_value_in_flight_msat: int
    channel_reserve_satoshis: int
    htlc_minimum_msat: int
    feerate_per_kw: int
    to_self_delay: int
    max_accepted_htlcs: int
    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes
    first_per_commitment_point: bytes
    channel_flags: bytes


@dataclass(frozen=True)
class AcceptChannel(WireMessage):
    """``accept_channel`` (33)."""

    TYPE: ClassVar[int] = 33
    NAME: ClassVar[str] = "accept_channel"
    temporary_channel_id: bytes
    dust_limit_satoshis: int
    max_htlc_value_in_flight_msat: int
    channel_reserve_satoshis: int
    htlc_minimum_msat: int
    minimum_depth: int
    to_self_delay: int
    max_accepted_htlcs: int
    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes
    first_per_commitment_point: bytes


@dataclass(frozen=True)
class FundingCreated(WireMessage):
    """``funding_created`` (34)."""

    TYPE: ClassVar[int] = 34
    NAME: ClassVar[str] = "funding_created"
    temporary_channel_id: bytes
    funding_txid: bytes
    funding_output_index: int
    signature: bytes


@dataclass(frozen=True)
class FundingSigned(WireMessage):
    """``funding_signed`` (35)."""

    TYPE: ClassVar[int] = 35
    NAME: ClassVar[str] = "funding_signed"
    channel_id: bytes
    signature: bytes


@dataclass(frozen=True)
class ChannelReady(WireMessage):
    """``channel_ready`` (36)."""

    TYPE: ClassVar[int] = 36
    NAME: ClassVar[str] = "channel_ready"
    channel_id: bytes
    second_per_commitment_point: bytes


@dataclass(frozen=True)
class Shutdown(WireMessage):
    """``shutdown`` (38)."""

    TYPE: ClassVar[int] = 38
    NAME: ClassVar[str] = "shutdown"
    channel_id: bytes
    scriptpubkey: bytes


@dataclass(frozen=True)
class ClosingSigned(WireMessage):
    """``closing_signed`` (39)."""

    TYPE: ClassVar[int] = 39
    NAME: ClassVar[str] = "closing_signed"
    channel_id: bytes
    fee_satoshis: int
    signature: bytes


@dataclass(frozen=True)
class ClosingComplete(WireMessage):
    """``closing_complete`` (40)."""

    TYPE: ClassVar[int] = 40
    NAME: ClassVar[str] = "closing_complete"
    channel_id: bytes
    closer_scriptpubkey: bytes
    closee_scriptpubkey: bytes
    fee_satoshis: int
    locktime: int


@dataclass(frozen=True)
class ClosingSig(WireMessage):
    """``closing_sig`` (41)."""

    TYPE: ClassVar[int] = 41
    NAME: ClassVar[str] = "closing_sig"
    channel_id: bytes
    closer_scriptpubkey: bytes
    closee_scriptpubkey: bytes
    fee_satoshis: int
    locktime: int


@dataclass(frozen=True)
class OpenChannel2(WireMessage):
    """``open_channel2`` (64)."""

    TYPE: ClassVar[int] = 64
    NAME: ClassVar[str] = "open_channel2"
    chain_hash: bytes
    temporary_channel_id: bytes
    funding_feerate_perkw: int
    commitment_feerate_perkw: int
    funding_satoshis: int
    dust_limit_satoshis: int
    max_htlc_value_in_flight_msat: int
    htlc_minimum_msat: int
    to_self_delay: int
    max_accepted_htlcs: int
    locktime: int
    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes
    first_per_commitment_point: bytes
    second_per_commitment_point: bytes
    channel_flags: bytes


@dataclass(frozen=True)
class AcceptChannel2(WireMessage):
    """``accept_channel2`` (65)."""

    TYPE: ClassVar[int] = 65
    NAME: ClassVar[str] = "accept_channel2"
    temporary_channel_id: bytes
    funding_satoshis: int
    dust_limit_satoshis: int
    max_htlc_value_in_flight_msat: int
    htlc_minimum_msat: int
    minimum_depth: int
    to_self_delay: int
    max_accepted_htlcs: int
    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes
    first_per_commitment_point: bytes
    second_per_commitment_point: bytes


@dataclass(frozen=True)
class TxAddInput(WireMessage):
    """``tx_add_input`` (66)."""

    TYPE: ClassVar[int] = 66
    NAME: ClassVar[str] = "tx_add_input"
    channel_id: bytes
    serial_id: int
    prevtx: bytes
    prevtx_vout: int
    sequence: int


@dataclass(frozen=True)
class TxAddOutput(WireMessage):
    """``tx_add_output`` (67)."""

    TYPE: ClassVar[int] = 67
    NAME: ClassVar[str] = "tx_add_output"
    channel_id: bytes
    serial_id: int
    sats: int
    script: bytes


@dataclass(frozen=True)
class TxRemoveInput(WireMessage):
    """``tx_remove_input`` (68)."""

    TYPE: ClassVar[int] = 68
    NAME: ClassVar[str] = "tx_remove_input"
    channel_id: bytes
    serial_id: int


@dataclass(frozen=True)
class TxRemoveOutput(WireMessage):
    """``tx_remove_output`` (69)."""

    TYPE: ClassVar[int] = 69
    NAME: ClassVar[str] = "tx_remove_output"
    channel_id: bytes
    serial_id: int


@dataclass(frozen=True)
class TxComplete(WireMessage):
    """``tx_complete`` (70)."""

    TYPE: ClassVar[int] = 70
    NAME: ClassVar[str] = "tx_complete"
    channel_id: bytes


@dataclass(frozen=True)
class TxSignatures(WireMessage):
    """``tx_signatures`` (71)."""

    TYPE: ClassVar[int] = 71
    NAME: ClassVar[str] = "tx_signatures"
    channel_id: bytes
    txid: bytes
    witnesses: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class TxInitRbf(WireMessage):
    """``tx_init_rbf`` (72)."""

    TYPE: ClassVar[int] = 72
    NAME: ClassVar[str] = "tx_init_rbf"
    channel_id: bytes
    locktime: int
    feerate: int


@dataclass(frozen=True)
class TxAckRbf(WireMessage):
    """``tx_ack_rbf`` (73)."""

    TYPE: ClassVar[int] = 73
    NAME: ClassVar[str] = "tx_ack_rbf"
    channel_id: bytes


@dataclass(frozen=True)
class TxAbort(WireMessage):
    """``tx_abort`` (74)."""

    TYPE: ClassVar[int] = 74
    NAME: ClassVar[str] = "tx_abort"
    channel_id: bytes
    data: bytes


@dataclass(frozen=True)
class SpliceLocked(WireMessage):
    """``splice_locked`` (77)."""

    TYPE: ClassVar[int] = 77
    NAME: ClassVar[str] = "splice_locked"
    channel_id: bytes
    splice_txid: bytes


@dataclass(frozen=True)
class SpliceInit(WireMessage):
    """``splice_init`` (80)."""

    TYPE: ClassVar[int] = 80
    NAME: ClassVar[str] = "splice_init"
    channel_id: bytes
    funding_contribution_satoshis: int
    funding_feerate_perkw: int
    locktime: int
    funding_pubkey: bytes


@dataclass(frozen=True)
class SpliceAck(WireMessage):
    """``splice_ack`` (81)."""

    TYPE: ClassVar[int] = 81
    NAME: ClassVar[str] = "splice_ack"
    channel_id: bytes
    funding_contribution_satoshis: int
    funding_pubkey: bytes


@dataclass(frozen=True)
class StartBatch(WireMessage):
    """``start_batch`` (127)."""

    TYPE: ClassVar[int] = 127
    NAME: ClassVar[str] = "start_batch"
    channel_id: bytes
    batch_size: int


@dataclass(frozen=True)
class UpdateAddHtlc(WireMessage):
    """``update_add_htlc`` (128)."""

    TYPE: ClassVar[int] = 128
    NAME: ClassVar[str] = "update_add_htlc"
    channel_id: bytes
    id: int
    amount_msat: int
    payment_hash: bytes
    cltv_expiry: int
    onion_routing_packet: bytes


@dataclass(frozen=True)
class UpdateFulfillHtlc(WireMessage):
    """``update_fulfill_htlc`` (130)."""

    TYPE: ClassVar[int] = 130
    NAME: ClassVar[str] = "update_fulfill_htlc"
    channel_id: bytes
    id: int
    payment_preimage: bytes


@dataclass(frozen=True)
class UpdateFailHtlc(WireMessage):
    """``update_fail_htlc`` (131)."""

    TYPE: ClassVar[int] = 131
    NAME: ClassVar[str] = "update_fail_htlc"
    channel_id: bytes
    id: int
    reason: bytes


@dataclass(frozen=True)
class CommitmentSigned(WireMessage):
    """``commitment_signed`` (132)."""

    TYPE: ClassVar[int] = 132
    NAME: ClassVar[str] = "commitment_signed"
    channel_id: bytes
    signature: bytes
    htlc_signature: tuple[bytes, ...]


@dataclass(frozen=True)
class RevokeAndAck(WireMessage):
    """``revoke_and_ack`` (133)."""

    TYPE: ClassVar[int] = 133
    NAME: ClassVar[str] = "revoke_and_ack"
    channel_id: bytes
    per_commitment_secret: bytes
    next_per_commitment_point: bytes


@dataclass(frozen=True)
class UpdateFee(WireMessage):
    """``update_fee`` (134)."""

    TYPE: ClassVar[int] = 134
    NAME: ClassVar[str] = "update_fee"
    channel_id: bytes
    feerate_per_kw: int


@dataclass(frozen=True)
class UpdateFailMalformedHtlc(WireMessage):
    """``update_fail_malformed_htlc`` (135)."""

    TYPE: ClassVar[int] = 135
    NAME: ClassVar[str] = "update_fail_malformed_htlc"
    channel_id: bytes
    id: int
    sha256_of_onion: bytes
    failure_code: int


@dataclass(frozen=True)
class ChannelReestablish(WireMessage):
    """``channel_reestablish`` (136)."""

    TYPE: ClassVar[int] = 136
    NAME: ClassVar[str] = "channel_reestablish"
    channel_id: bytes
    next_commitment_number: int
    next_revocation_number: int
    your_last_per_commitment_secret: bytes
    my_current_per_commitment_point: bytes


@dataclass(frozen=True)
class ChannelAnnouncement(WireMessage):
    """``channel_announcement`` (256)."""

    TYPE: ClassVar[int] = 256
    NAME: ClassVar[str] = "channel_announcement"
    node_signature_1: bytes
    node_signature_2: bytes
    bitcoin_signature_1: bytes
    bitcoin_signature_2: bytes
    features: bytes
    chain_hash: bytes
    short_channel_id: bytes
    node_id_1: bytes
    node_id_2: bytes
    bitcoin_key_1: bytes
    bitcoin_key_2: bytes


@dataclass(frozen=True)
class NodeAnnouncement(WireMessage):
    """``node_announcement`` (257)."""

    TYPE: ClassVar[int] = 257
    NAME: ClassVar[str] = "node_announcement"
    signature: bytes
    features: bytes
    timestamp: int
    node_id: bytes
    rgb_color: bytes
    alias: bytes
    addresses: bytes


@dataclass(frozen=True)
class ChannelUpdate(WireMessage):
    """``channel_update`` (258)."""

    TYPE: ClassVar[int] = 258
    NAME: ClassVar[str] = "channel_update"
    signature: bytes
    chain_hash: bytes
    short_channel_id: bytes
    timestamp: int
    message_flags: bytes
    channel_flags: bytes
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    htlc_maximum_msat: int


@dataclass(frozen=True)
class AnnouncementSignatures(WireMessage):
    """``announcement_signatures`` (259)."""

    TYPE: ClassVar[int] = 259
    NAME: ClassVar[str] = "announcement_signatures"
    channel_id: bytes
    short_channel_id: bytes
    node_signature: bytes
    bitcoin_signature: bytes


@dataclass(frozen=True)
class QueryShortChannelIds(WireMessage):
    """``query_short_channel_ids`` (261)."""

    TYPE: ClassVar[int] = 261
    NAME: ClassVar[str] = "query_short_channel_ids"
    chain_hash: bytes
    encoded_short_ids: bytes


@dataclass(frozen=True)
class ReplyShortChannelIdsEnd(WireMessage):
    """``reply_short_channel_ids_end`` (262)."""

    TYPE: ClassVar[int] = 262
    NAME: ClassVar[str] = "reply_short_channel_ids_end"
    chain_hash: bytes
    full_information: bytes


@dataclass(frozen=True)
class QueryChannelRange(WireMessage):
    """``query_channel_range`` (263)."""

    TYPE: ClassVar[int] = 263
    NAME: ClassVar[str] = "query_channel_range"
    chain_hash: bytes
    first_blocknum: int
    number_of_blocks: int


@dataclass(frozen=True)
class ReplyChannelRange(WireMessage):
    """``reply_channel_range`` (264)."""

    TYPE: ClassVar[int] = 264
    NAME: ClassVar[str] = "reply_channel_range"
    chain_hash: bytes
    first_blocknum: int
    number_of_blocks: int
    sync_complete: bytes
    encoded_short_ids: bytes


@dataclass(frozen=True)
class GossipTimestampFilter(WireMessage):
    """``gossip_timestamp_filter`` (265)."""

    TYPE: ClassVar[int] = 265
    NAME: ClassVar[str] = "gossip_timestamp_filter"
    chain_hash: bytes
    first_timestamp: int
    timestamp_range: int


@dataclass(frozen=True)
class OnionMessage(WireMessage):
    """``onion_message`` (513)."""

    TYPE: ClassVar[int] = 513
    NAME: ClassVar[str] = "onion_message"
    path_key: bytes
    onion_message_packet: bytes


GENERATED_MESSAGES: tuple[type[WireMessage], ...] = (
    Stfu,
    PeerStorage,
    PeerStorageRetrieval,
    OpenChannel,
    AcceptChannel,
    FundingCreated,
    FundingSigned,
    ChannelReady,
    Shutdown,
    ClosingSigned,
    ClosingComplete,
    ClosingSig,
    OpenChannel2,
    AcceptChannel2,
    TxAddInput,
    TxAddOutput,
    TxRemoveInput,
    TxRemoveOutput,
    TxComplete,
    TxSignatures,
    TxInitRbf,
    TxAckRbf,
    TxAbort,
    SpliceLocked,
    SpliceInit,
    SpliceAck,
    StartBatch,
    UpdateAddHtlc,
    UpdateFulfillHtlc,
    UpdateFailHtlc,
    CommitmentSigned,
    RevokeAndAck,
    UpdateFee,
    UpdateFailMalformedHtlc,
    ChannelReestablish,
    ChannelAnnouncement,
    NodeAnnouncement,
    ChannelUpdate,
    AnnouncementSignatures,
    QueryShortChannelIds,
    ReplyShortChannelIdsEnd,
    QueryChannelRange,
    ReplyChannelRange,
    GossipTimestampFilter,
    OnionMessage,
)
