"""channel: BOLT 3 transaction builders (pure functions); the BOLT 2 state machine comes later.

See DESIGN.md. ``commitment`` builds commitment transactions, ``htlc_tx`` the
second-stage HTLC transactions, ``scripts`` the witness scripts they use.
"""

from lightspeed.channel.commitment import (
    ChannelBasepoints,
    CommitmentKeys,
    CommitmentParams,
    CommitmentTx,
    Htlc,
    HtlcOutput,
    build_commitment_tx,
    commitment_fee_sat,
    commitment_number_from_tx,
    commitment_sighash,
    htlc_success_fee_sat,
    htlc_timeout_fee_sat,
    is_trimmed,
    obscuring_factor,
    sign_commitment,
    with_funding_witness,
)
from lightspeed.channel.establish import (
    ANCHORS,
    STATIC_REMOTEKEY,
    ChannelPolicy,
    ChannelType,
    check_accept_channel,
    check_open_channel,
)
from lightspeed.channel.htlc_log import CommitmentView, HtlcLog, LoggedHtlc, Removal, Side
from lightspeed.channel.htlc_tx import (
    build_htlc_tx,
    build_htlc_txs,
    htlc_sighash,
    remote_htlc_sighash_type,
    sign_htlc_tx,
    with_htlc_witness,
)
from lightspeed.channel.scripts import (
    ANCHOR_OUTPUT_SAT,
    anchor_script,
    funding_script,
    offered_htlc_script,
    received_htlc_script,
    to_local_script,
    to_remote_anchors_script,
)
from lightspeed.channel.state import Channel, ChannelConfig, HtlcFulfilled, LocalSecrets

__all__ = [
    "ANCHORS",
    "ANCHOR_OUTPUT_SAT",
    "STATIC_REMOTEKEY",
    "Channel",
    "ChannelBasepoints",
    "ChannelConfig",
    "ChannelPolicy",
    "ChannelType",
    "CommitmentKeys",
    "CommitmentParams",
    "CommitmentTx",
    "CommitmentView",
    "Htlc",
    "HtlcFulfilled",
    "HtlcLog",
    "HtlcOutput",
    "LocalSecrets",
    "LoggedHtlc",
    "Removal",
    "Side",
    "anchor_script",
    "build_commitment_tx",
    "build_htlc_tx",
    "build_htlc_txs",
    "check_accept_channel",
    "check_open_channel",
    "commitment_fee_sat",
    "commitment_number_from_tx",
    "commitment_sighash",
    "funding_script",
    "htlc_sighash",
    "htlc_success_fee_sat",
    "htlc_timeout_fee_sat",
    "is_trimmed",
    "obscuring_factor",
    "offered_htlc_script",
    "received_htlc_script",
    "remote_htlc_sighash_type",
    "sign_commitment",
    "sign_htlc_tx",
    "to_local_script",
    "to_remote_anchors_script",
    "with_funding_witness",
    "with_htlc_witness",
]
