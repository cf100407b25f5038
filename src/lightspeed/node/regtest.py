"""A block producer for the embedded regtest chain, for demos, examples and tests."""

from __future__ import annotations

import asyncio

from lightspeed.chain.regtest import RegtestChain


async def mine_forever(chain: RegtestChain, every: float) -> None:
    """Mine one block every ``every`` seconds until cancelled (confirmations for channels)."""
    while True:
        await asyncio.sleep(every)
        chain.mine(1)
