"""Addresses <-> scriptPubKeys for P2PKH, P2SH and segwit v0..v16 (P2WPKH, P2WSH, P2TR)."""

from __future__ import annotations

from lightspeed.bitcoin.network import Network
from lightspeed.codec.base58 import b58check_decode, b58check_encode
from lightspeed.codec.bech32 import decode_segwit_address, encode_segwit_address
from lightspeed.errors import DecodeError

OP_0 = 0x00
OP_1 = 0x51
OP_DUP = 0x76
OP_HASH160 = 0xA9
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_CHECKSIG = 0xAC


def p2pkh_address(pubkey_hash: bytes, network: Network) -> str:
    if len(pubkey_hash) != 20:
        raise ValueError("P2PKH needs a 20-byte key hash")
    return b58check_encode(bytes([network.p2pkh_version]) + pubkey_hash)


def p2sh_address(script_hash: bytes, network: Network) -> str:
    if len(script_hash) != 20:
        raise ValueError("P2SH needs a 20-byte script hash")
    return b58check_encode(bytes([network.p2sh_version]) + script_hash)


def segwit_address(version: int, program: bytes, network: Network) -> str:
    """BIP 173 (v0, bech32) or BIP 350 (v1+, bech32m) address."""
    if not 0 <= version <= 16:
        raise ValueError(f"witness version {version} out of range")
    return encode_segwit_address(network.bech32_hrp, version, program)


def p2pkh_script(pubkey_hash: bytes) -> bytes:
    return bytes([OP_DUP, OP_HASH160, 20]) + pubkey_hash + bytes([OP_EQUALVERIFY, OP_CHECKSIG])


def p2sh_script(script_hash: bytes) -> bytes:
    return bytes([OP_HASH160, 20]) + script_hash + bytes([OP_EQUAL])


def segwit_script(version: int, program: bytes) -> bytes:
    opcode = OP_0 if version == 0 else OP_1 + version - 1
    return bytes([opcode, len(program)]) + program


def address_to_script(address: str, network: Network) -> bytes:
    """scriptPubKey paying ``address``; raises DecodeError if it is not for ``network``."""
    if address.lower().startswith(network.bech32_hrp + "1"):
        version, program = decode_segwit_address(network.bech32_hrp, address)
        return segwit_script(version, program)
    payload = b58check_decode(address)
    if len(payload) != 21:
        raise DecodeError("address", "base58 payload is not 21 bytes")
    if payload[0] == network.p2pkh_version:
        return p2pkh_script(payload[1:])
    if payload[0] == network.p2sh_version:
        return p2sh_script(payload[1:])
    raise DecodeError("address", f"version byte {payload[0]} is not for {network.name}")


def script_to_address(script: bytes, network: Network) -> str | None:
    """Address of a standard scriptPubKey, or None for non-standard scripts."""
    if len(script) == 25 and script[:3] == bytes([OP_DUP, OP_HASH160, 20]) and script[23:] == bytes([OP_EQUALVERIFY, OP_CHECKSIG]):
        return p2pkh_address(script[3:23], network)
    if len(script) == 23 and script[:2] == bytes([OP_HASH160, 20]) and script[22] == OP_EQUAL:
        return p2sh_address(script[2:22], network)
    if 4 <= len(script) <= 42 and script[1] == len(script) - 2:
        if script[0] == OP_0:
            return segwit_address(0, script[2:], network)
        if OP_1 <= script[0] <= OP_1 + 15:
            return segwit_address(script[0] - OP_1 + 1, script[2:], network)
    return None
