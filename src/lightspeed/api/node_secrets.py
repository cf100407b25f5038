"""The node's secrets in its datadir: a BIP 39 mnemonic (plain or encrypted), or an older node_secret.

Files (each created 0600, atomically):

    DIR/wallet_mnemonic      the BIP 39 words, one line (datadirs made since BIP 39 support)
    DIR/wallet_mnemonic.enc  the same words encrypted with a passphrase (``--passphrase-file``)
    DIR/node_secret          32 random bytes (datadirs made before): still read, never created anew

From the mnemonic (BIP 39 seed with an empty BIP 39 passphrase, so other wallets restore the
words as they are): the wallet is BIP 84 / BIP 86 (:mod:`lightspeed.chain.wallet`) and the node
key is the BIP 32 key at ``m/1017'/coin'/6'/0/0`` (lnd's node-key family; coin 0 on bitcoin,
1 on test networks). So the words alone give back the node's identity and its on-chain coins.

The encryption passphrase only guards the file: the key is scrypt(passphrase, salt; N=2^15,
r=8, p=1), the cipher ChaCha20-Poly1305, so a wrong passphrase is detected, never a wrong seed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from lightspeed.api.datadir import SECRET_FILE, SECRET_FILES, write_private
from lightspeed.bitcoin.network import Network
from lightspeed.chain.hd import (
    ExtendedKey,
    check_mnemonic,
    coin_type,
    generate_mnemonic,
    mnemonic_to_seed,
)
from lightspeed.chain.wallet import HdSeed
from lightspeed.errors import UsageError

LEGACY_SECRET_FILE = SECRET_FILE
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_AAD = b"lightspeed wallet mnemonic v1"


def node_key_path(network: Network) -> str:
    return f"m/1017'/{coin_type(network)}'/6'/0/0"


@dataclass(frozen=True)
class NodeKeys:
    node_privkey: bytes
    wallet_seed: bytes | HdSeed
    new_mnemonic: str | None = None  # the words, when this call created them: show them once


def _kdf(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase.encode())


def encrypt_mnemonic(words: str, passphrase: str) -> bytes:
    if not passphrase:
        raise UsageError("passphrase: empty; give one, or keep the mnemonic unencrypted")
    salt, nonce = os.urandom(16), os.urandom(12)
    box = ChaCha20Poly1305(_kdf(passphrase, salt)).encrypt(nonce, words.encode(), _AAD)
    return json.dumps({"version": 1, "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                       "salt": salt.hex(), "nonce": nonce.hex(), "ciphertext": box.hex()}).encode() + b"\n"


def decrypt_mnemonic(data: bytes, passphrase: str, where: str) -> str:
    try:
        doc = json.loads(data)
        if doc.get("version") != 1 or doc.get("kdf") != "scrypt":
            raise ValueError("unknown version or kdf")
        salt, nonce, box = (bytes.fromhex(doc[k]) for k in ("salt", "nonce", "ciphertext"))
        key = Scrypt(salt=salt, length=32, n=int(doc["n"]), r=int(doc["r"]), p=int(doc["p"])).derive(passphrase.encode())
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{where}: not an encrypted mnemonic file ({exc})") from None
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, box, _AAD).decode()
    except InvalidTag:
        raise UsageError(f"{where}: wrong passphrase (the file does not decrypt with it)") from None


def from_mnemonic(words: str, network: Network, new: bool = False) -> NodeKeys:
    seed = mnemonic_to_seed(words)
    node_key = ExtendedKey.from_seed(seed).derive(node_key_path(network)).privkey
    return NodeKeys(node_key, HdSeed(seed), words if new else None)


def load_or_create(datadir: Path, network: Network, *, passphrase: str | None = None,
                   restore: str | None = None, words: int = 24) -> NodeKeys:
    """The datadir's keys; a new datadir gets a new mnemonic (or ``restore``'s words)."""
    legacy, plain, encrypted = (datadir / name for name in SECRET_FILES)
    if legacy.exists():
        if restore is not None:
            raise UsageError(f"--mnemonic-file: {datadir} already has its keys ({LEGACY_SECRET_FILE}); "
                             "restore into a new datadir")
        secret = legacy.read_bytes()
        if len(secret) != 32:
            raise UsageError(f"{legacy}: the node secret must be 32 bytes, found {len(secret)}")
        return NodeKeys(hmac.digest(secret, b"lightspeed/node key", hashlib.sha256),
                        hmac.digest(secret, b"lightspeed/wallet seed", hashlib.sha256))
    if encrypted.exists():
        if passphrase is None:
            raise UsageError(f"{encrypted}: the mnemonic is encrypted; give --passphrase-file")
        stored = check_mnemonic(decrypt_mnemonic(encrypted.read_bytes(), passphrase, str(encrypted)))
    elif plain.exists():
        if passphrase is not None:
            raise UsageError(f"--passphrase-file: {plain} is not encrypted; start without a passphrase")
        stored = check_mnemonic(plain.read_text())
    else:
        chosen = check_mnemonic(restore) if restore is not None else generate_mnemonic(words)
        if passphrase is not None:
            write_private(encrypted, encrypt_mnemonic(chosen, passphrase))
        else:
            write_private(plain, chosen.encode() + b"\n")
        return from_mnemonic(chosen, network, new=restore is None)
    if restore is not None and check_mnemonic(restore) != stored:
        raise UsageError(f"--mnemonic-file: {datadir} already holds another mnemonic; restore into a new datadir")
    return from_mnemonic(stored, network)


def read_text_file(path: Path, option: str) -> str:
    try:
        return path.read_text().strip("\r\n")
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
