"""What the node asks of a peer in ``open_channel`` / ``accept_channel``: values BOLT 2 leaves to each node.

The spec fixes bounds (a dust limit of at least 354 sat, a reserve of at least the peer's dust
limit, ...) and leaves the values to the implementation; these are ours, one place to change
them (an operator, or a conformance suite that expects another implementation's values).
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.errors import UsageError

MIN_DUST_LIMIT_SAT = 354  # BOLT 2 / BOLT 3 "Dust Limits": below this, a peer MUST fail the channel
MAX_ACCEPTED_HTLCS = 483  # BOLT 2: a peer MUST fail the channel above it


@dataclass(frozen=True)
class ChannelSettings:
    """Our side of a new channel's parameters (see the module docstring)."""

    dust_limit_sat: int = 546  # the P2PKH dust threshold: our outputs below it are trimmed
    reserve_ppm: int = 10_000  # the reserve we ask of the peer: 1% of the channel (BOLT 2: SHOULD be)
    to_self_delay: int = 144  # blocks the peer waits for its own funds after a force close
    minimum_depth: int = 3  # confirmations we ask for in accept_channel (both sides wait for them)
    max_accepted_htlcs: int = 30
    htlc_minimum_msat: int = 1
    feerate_per_kw: int = 2500  # the funder's initial commitment feerate

    def __post_init__(self) -> None:
        if self.dust_limit_sat < MIN_DUST_LIMIT_SAT:
            raise UsageError(f"dust_limit_sat: {self.dust_limit_sat} is below BOLT 2's minimum of {MIN_DUST_LIMIT_SAT}")
        if not 0 <= self.reserve_ppm <= 1_000_000:
            raise UsageError(f"reserve_ppm: {self.reserve_ppm} is not a share of the channel (0 to 1,000,000)")
        if not 1 <= self.max_accepted_htlcs <= MAX_ACCEPTED_HTLCS:
            raise UsageError(f"max_accepted_htlcs: {self.max_accepted_htlcs} is not 1 to {MAX_ACCEPTED_HTLCS}")
        for name in ("to_self_delay", "minimum_depth", "htlc_minimum_msat", "feerate_per_kw"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}: must be 1 or more")

    def reserve_sat(self, funding_sat: int) -> int:
        """The reserve we ask the peer to keep: our share of the channel, and never below our dust limit.

        BOLT 2: the receiver MUST fail the channel if channel_reserve_satoshis is less than its
        own dust_limit_satoshis; ours at least covers our dust limit.
        """
        return max(self.dust_limit_sat, funding_sat * self.reserve_ppm // 1_000_000)


DEFAULT_CHANNEL_SETTINGS = ChannelSettings()
