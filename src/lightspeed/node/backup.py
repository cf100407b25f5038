"""Static channel backups: what a node restored from its mnemonic needs to recover its channels.

A backup lists, for every open channel, the peer to ask for a force close and what it takes
to recognise and sweep the peer's commitment: the funding outpoint and amount, our channel
key id (our secrets derive from it and the node key: see node.keys), the channel type,
who funded it and the delay the peer imposed on us. It holds no secret and no state that
could be broadcast: an old backup can never be used to cheat a peer (unlike an old store).

The file (``DATADIR/channel.backup``) is ``b"LSCB" || version (1 byte) || nonce (12 bytes) ||
ChaCha20-Poly1305(key, nonce, json, aad=b"LSCB" || version)`` with
``key = HMAC-SHA256(node_privkey, "lightspeed/channel backup")``: only the mnemonic's owner
reads it, and a wrong key or a changed byte is refused by the tag, never misread.
It is rewritten atomically (a temporary file, fsync, rename, fsync of the directory)
whenever the set of open channels changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lightspeed.errors import DecodeError

MAGIC = b"LSCB"
VERSION = 1
BACKUP_FILE = "channel.backup"
_HEADER = MAGIC + bytes([VERSION])
_NONCE_LEN = 12
_TAG_LEN = 16


@dataclass(frozen=True)
class BackupChannel:
    """One channel as the backup keeps it: enough to recover it, nothing that can steal."""

    channel_id: bytes
    peer_id: bytes
    host: str | None  # the peer's last known address (None: never dialled by us, it dialled in)
    port: int | None
    funding_txid: bytes
    funding_output_index: int
    funding_sat: int
    key_index: int
    anchors: bool
    local_is_funder: bool
    local_to_self_delay: int  # the delay on our outputs, set by the peer

    def to_json(self) -> dict[str, object]:
        values = asdict(self)
        for name in ("channel_id", "peer_id", "funding_txid"):
            values[name] = values[name].hex()
        values["key_index"] = str(self.key_index)  # 256-bit integers: kept exact as text
        return values

    @classmethod
    def from_json(cls, values: object) -> BackupChannel:
        if not isinstance(values, dict):
            raise DecodeError("channel backup", "a channel entry is not an object")
        try:
            port = values["port"]
            return cls(
                channel_id=_hex(values["channel_id"], 32), peer_id=_hex(values["peer_id"], 33),
                host=None if values["host"] is None else str(values["host"]),
                port=None if port is None else int(port),
                funding_txid=_hex(values["funding_txid"], 32),
                funding_output_index=int(values["funding_output_index"]), funding_sat=int(values["funding_sat"]),
                key_index=int(values["key_index"]), anchors=bool(values["anchors"]),
                local_is_funder=bool(values["local_is_funder"]), local_to_self_delay=int(values["local_to_self_delay"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError("channel backup", f"a channel entry is malformed ({exc})") from None


def _hex(value: object, length: int) -> bytes:
    data = bytes.fromhex(str(value))
    if len(data) != length:
        raise ValueError(f"expected {length} bytes, got {len(data)}")
    return data


def backup_key(node_privkey: bytes) -> bytes:
    """The encryption key: from the node key, so the mnemonic alone opens the backup."""
    return hmac.digest(node_privkey, b"lightspeed/channel backup", hashlib.sha256)


def encode_backup(node_privkey: bytes, channels: list[BackupChannel]) -> bytes:
    plaintext = json.dumps({"version": VERSION, "channels": [c.to_json() for c in channels]},
                           separators=(",", ":"), sort_keys=True).encode()
    nonce = secrets.token_bytes(_NONCE_LEN)
    return _HEADER + nonce + ChaCha20Poly1305(backup_key(node_privkey)).encrypt(nonce, plaintext, _HEADER)


def decode_backup(node_privkey: bytes, data: bytes) -> list[BackupChannel]:
    """The channels of a backup; a ``DecodeError`` naming why when it is not one of this node's."""
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise DecodeError("channel backup", "not a Lightspeed channel backup (bad magic bytes)")
    if len(data) < len(_HEADER) or data[len(MAGIC)] != VERSION:
        version = data[len(MAGIC)] if len(data) > len(MAGIC) else None
        raise DecodeError("channel backup", f"unsupported version {version} (this node reads version {VERSION})")
    if len(data) < len(_HEADER) + _NONCE_LEN + _TAG_LEN:
        raise DecodeError("channel backup", "truncated")
    nonce = data[len(_HEADER):len(_HEADER) + _NONCE_LEN]
    try:
        plaintext = ChaCha20Poly1305(backup_key(node_privkey)).decrypt(nonce, data[len(_HEADER) + _NONCE_LEN:], _HEADER)
    except InvalidTag:
        raise DecodeError("channel backup", "cannot be decrypted: made by another node key, or corrupt") from None
    try:
        document = json.loads(plaintext)
        entries = document["channels"]
    except (ValueError, KeyError, TypeError):
        raise DecodeError("channel backup", "the decrypted content is malformed") from None
    if not isinstance(entries, list):
        raise DecodeError("channel backup", "the channel list is malformed")
    return [BackupChannel.from_json(entry) for entry in entries]


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves either the old file or the new one, whole."""
    temporary = path.with_name(path.name + ".tmp")
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
