"""The four Bitcoin networks Lightning runs on, with their address and invoice prefixes."""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.errors import DecodeError


@dataclass(frozen=True)
class Network:
    name: str
    bech32_hrp: str  # segwit address prefix (BIP 173)
    p2pkh_version: int  # base58check version byte of P2PKH addresses
    p2sh_version: int  # base58check version byte of P2SH addresses
    bolt11_prefix: str  # BOLT 11 currency prefix after "ln"
    chain_hash: bytes  # genesis block hash in internal byte order (BOLT 0 chain_hash)


BITCOIN = Network(
    "bitcoin", "bc", 0x00, 0x05, "bc",
    bytes.fromhex("6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000"),
)
TESTNET = Network(
    "testnet", "tb", 0x6F, 0xC4, "tb",
    bytes.fromhex("43497fd7f826957108f4a30fd9cec3aeba79972084e90ead01ea330900000000"),
)
SIGNET = Network(
    "signet", "tb", 0x6F, 0xC4, "tbs",
    bytes.fromhex("f61eee3b63a380a477a063af32b2bbc97c9ff9f01f2c4225e973988108000000"),
)
REGTEST = Network(
    "regtest", "bcrt", 0x6F, 0xC4, "bcrt",
    bytes.fromhex("06226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f"),
)

NETWORKS: tuple[Network, ...] = (BITCOIN, TESTNET, SIGNET, REGTEST)


def network_by_name(name: str) -> Network:
    for network in NETWORKS:
        if network.name == name:
            return network
    raise DecodeError("network", f"unknown network {name!r} (expected one of bitcoin, testnet, signet, regtest)")
