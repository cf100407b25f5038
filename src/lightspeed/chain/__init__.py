"""Chain access: the ChainSource interface and the embedded, validating regtest chain."""

from lightspeed.chain.regtest import COINBASE_MATURITY, RegtestChain
from lightspeed.chain.source import ChainSource, Utxo
from lightspeed.chain.wallet import Wallet

__all__ = ["COINBASE_MATURITY", "ChainSource", "RegtestChain", "Utxo", "Wallet"]
