"""Two in-memory Channels of one channel, as if opened and ready: for simulations, benchmarks and tests.

The pair shares the funding outpoint and each side knows the other's points
for commitments 0 and 1 (what ``open_channel``/``accept_channel`` and
``channel_ready`` would have told it); the usual opening messages are skipped.
"""

from __future__ import annotations

import os

from lightspeed.channel.state import Channel, ChannelConfig, LocalSecrets, channel_id_from_funding


def random_secrets() -> LocalSecrets:
    return LocalSecrets(*(os.urandom(32) for _ in range(6)))


def channel_pair(
    funding_sat: int,
    funder_msat: int | None = None,
    *,
    anchors: bool = True,
    funding_txid: bytes | None = None,
    funding_output_index: int = 0,
    funder_secrets: LocalSecrets | None = None,
    fundee_secrets: LocalSecrets | None = None,
    feerate_per_kw: int = 2500,
    max_accepted_htlcs: int = 30,
    reserve_sat: int = 0,
    htlc_minimum_msat: int = 1,
    max_htlc_value_in_flight_msat: int = 2**64 - 1,
    dust_limit_sat: int = 546,
) -> tuple[Channel, Channel]:
    """(funder, fundee); ``funder_msat`` defaults to the whole channel. The limits are the same both ways."""
    txid = funding_txid or os.urandom(32)
    funder_s, fundee_s = funder_secrets or random_secrets(), fundee_secrets or random_secrets()
    channel_id = channel_id_from_funding(txid, funding_output_index)
    total = funding_sat * 1000
    funder_msat = total if funder_msat is None else funder_msat

    def config(is_funder: bool, remote: LocalSecrets) -> ChannelConfig:
        return ChannelConfig(channel_id, txid, funding_output_index, funding_sat, is_funder, anchors,
                             remote.basepoints(), dust_limit_sat, dust_limit_sat, 144, 144,
                             max_accepted_htlcs=max_accepted_htlcs, remote_max_accepted_htlcs=max_accepted_htlcs,
                             htlc_minimum_msat=htlc_minimum_msat, remote_htlc_minimum_msat=htlc_minimum_msat,
                             reserve_from_remote_sat=reserve_sat, reserve_for_local_sat=reserve_sat,
                             max_htlc_value_in_flight_msat=max_htlc_value_in_flight_msat,
                             remote_max_htlc_value_in_flight_msat=max_htlc_value_in_flight_msat)

    funder = Channel(config(True, fundee_s), funder_s, funder_msat, total - funder_msat, feerate_per_kw, {})
    fundee = Channel(config(False, funder_s), fundee_s, total - funder_msat, funder_msat, feerate_per_kw, {})
    funder.remote_points.update({0: fundee.local_point(0), 1: fundee.local_point(1)})
    fundee.remote_points.update({0: funder.local_point(0), 1: funder.local_point(1)})
    return funder, fundee
