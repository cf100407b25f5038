"""Bitcoin: networks, addresses, transactions, scripts, BIP 143 signature hashes."""

from lightspeed.bitcoin.address import (
    address_to_script,
    p2pkh_address,
    p2sh_address,
    script_to_address,
    segwit_address,
)
from lightspeed.bitcoin.network import (
    BITCOIN,
    NETWORKS,
    REGTEST,
    SIGNET,
    TESTNET,
    Network,
    network_by_name,
)

__all__ = [
    "BITCOIN",
    "NETWORKS",
    "REGTEST",
    "SIGNET",
    "TESTNET",
    "Network",
    "address_to_script",
    "network_by_name",
    "p2pkh_address",
    "p2sh_address",
    "script_to_address",
    "segwit_address",
]
