"""BIP 39 mnemonics and BIP 32 / 84 / 86 key derivation: keys any standard wallet can restore.

BIP 39 (words -> seed) is the ``mnemonic`` package (Trezor's reference implementation).
BIP 32 is written here on coincurve: the maintained ``bip32`` package pins ``coincurve<21``,
which conflicts with the coincurve this project uses, and ``embit`` brings a second
secp256k1 implementation; child derivation is a dozen lines over libsecp256k1.

Paths (``coin`` is 0 on bitcoin, 1 on testnet, signet and regtest, as BIP 44 registers):

* wallet, P2WPKH (BIP 84): ``m/84'/coin'/0'/{0 receive, 1 change}/i``
* wallet, P2TR key path (BIP 86): ``m/86'/coin'/0'/{0,1}/i``
* the Lightning node key: ``m/1017'/coin'/6'/0/0`` (lnd's family 6, the node key family),
  so that a mnemonic alone restores the node's identity too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKey
from mnemonic import Mnemonic

from lightspeed.bitcoin.network import BITCOIN, Network
from lightspeed.bitcoin.taproot import tweaked_pubkey
from lightspeed.codec.base58 import b58check_encode
from lightspeed.crypto.hashes import hash160
from lightspeed.crypto.secp256k1 import CURVE_ORDER
from lightspeed.errors import UsageError

HARDENED = 0x8000_0000
_WORDLIST = Mnemonic("english")


def coin_type(network: Network) -> int:
    """BIP 44 coin type: 0 on mainnet, 1 on every test network."""
    return 0 if network == BITCOIN else 1


# -- BIP 39 --------------------------------------------------------------------------------------

def generate_mnemonic(words: int = 24) -> str:
    """A fresh English BIP 39 mnemonic of 12 or 24 words (128 or 256 bits of entropy)."""
    if words not in (12, 24):
        raise UsageError(f"mnemonic: 12 or 24 words, not {words}")
    return str(_WORDLIST.to_mnemonic(secrets.token_bytes(words * 4 // 3)))


def check_mnemonic(words: str) -> str:
    """``words`` normalised (single spaces, lower case), or a UsageError saying what is wrong."""
    normal = " ".join(words.lower().split())
    count = len(normal.split())
    if count not in (12, 15, 18, 21, 24):
        raise UsageError(f"mnemonic: {count} words; a BIP 39 mnemonic has 12, 15, 18, 21 or 24")
    unknown = [w for w in normal.split() if w not in _WORDLIST.wordlist]
    if unknown:
        raise UsageError(f"mnemonic: {unknown[0]!r} is not a word of the BIP 39 English list")
    if not _WORDLIST.check(normal):
        raise UsageError("mnemonic: the checksum does not match (a word is wrong or out of order)")
    return normal


def mnemonic_to_seed(words: str, passphrase: str = "") -> bytes:
    """BIP 39: PBKDF2-HMAC-SHA512(mnemonic, "mnemonic" || passphrase, 2048) -> 64-byte seed."""
    return bytes(Mnemonic.to_seed(check_mnemonic(words), passphrase))


# -- BIP 32 --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtendedKey:
    """A BIP 32 extended private key."""

    privkey: bytes
    chain_code: bytes
    depth: int = 0
    parent_fingerprint: bytes = bytes(4)
    child_number: int = 0

    @classmethod
    def from_seed(cls, seed: bytes) -> ExtendedKey:
        if not 16 <= len(seed) <= 64:
            raise UsageError(f"seed: BIP 32 takes 16 to 64 bytes, not {len(seed)}")
        digest = hmac.digest(b"Bitcoin seed", seed, hashlib.sha512)
        if not 0 < int.from_bytes(digest[:32], "big") < CURVE_ORDER:
            raise UsageError("seed: gives an invalid master key (BIP 32); use another seed")
        return cls(digest[:32], digest[32:])

    @property
    def pubkey(self) -> bytes:
        return PrivateKey(self.privkey).public_key.format(compressed=True)

    def child(self, index: int) -> ExtendedKey:
        """CKDpriv; ``index >= HARDENED`` is a hardened child."""
        if not 0 <= index < 2**32:
            raise UsageError(f"BIP 32 child index {index}: must be 0 to 2^32-1")
        data = (b"\x00" + self.privkey if index >= HARDENED else self.pubkey) + index.to_bytes(4, "big")
        digest = hmac.digest(self.chain_code, data, hashlib.sha512)
        tweak = int.from_bytes(digest[:32], "big")
        key = (tweak + int.from_bytes(self.privkey, "big")) % CURVE_ORDER
        if tweak >= CURVE_ORDER or key == 0:  # probability below 2^-127; BIP 32 says skip the index
            raise UsageError(f"BIP 32 child {index}: invalid key, use the next index")
        return ExtendedKey(key.to_bytes(32, "big"), digest[32:], self.depth + 1, hash160(self.pubkey)[:4], index)

    def derive(self, path: str) -> ExtendedKey:
        """``path`` like ``m/84'/0'/0'/0/1`` (``'`` or ``h`` marks hardened)."""
        parts = path.split("/")
        if parts[0] != "m":
            raise UsageError(f"derivation path {path!r}: must start with m")
        key = self
        for part in parts[1:]:
            hardened = part[-1:] in ("'", "h", "H")
            digits = part[:-1] if hardened else part
            if not digits.isdigit() or int(digits) >= HARDENED:
                raise UsageError(f"derivation path {path!r}: {part!r} is not an index")
            key = key.child(int(digits) + (HARDENED if hardened else 0))
        return key

    def serialize(self, version: bytes = bytes.fromhex("0488ade4")) -> str:
        """Base58check ``xprv`` (or another version: ``zprv`` 04b2430c, ``tprv`` 04358394)."""
        return b58check_encode(version + bytes([self.depth]) + self.parent_fingerprint
                               + self.child_number.to_bytes(4, "big") + self.chain_code + b"\x00" + self.privkey)


# -- BIP 86 --------------------------------------------------------------------------------------

def taproot_output_key(pubkey: bytes) -> bytes:
    """BIP 86 / BIP 341: the x-only output key of a key-path-only P2TR output for ``pubkey``."""
    return tweaked_pubkey(pubkey[1:])  # x-only: BIP 340 takes the point with even y


def p2tr_script(output_key: bytes) -> bytes:
    return b"\x51\x20" + output_key


def xonly(pubkey: bytes) -> bytes:
    return PublicKey(pubkey).format(compressed=True)[1:]
