"""The BOLT 12 TLV Merkle tree and its tagged hashes.

BOLT #12: "we define H(`tag`,`msg`) as SHA256(SHA256(`tag`) || SHA256(`tag`) ||
`msg`)". Every non-signature record contributes a leaf ``H("LnLeaf", tlv)`` paired
with a nonce leaf ``H("LnNonce"||first-tlv, tlv-type)``; pairs and then subtrees
are joined by ``H("LnBranch", lesser || greater)``, the deepest part of an uneven
tree on the lowest-order leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from lightspeed.errors import DecodeError
from lightspeed.offers.tlv_fields import TlvRecord, is_signature_type, read_records


def _tag_prefix(tag: bytes) -> hashlib._Hash:
    tag_hash = hashlib.sha256(tag).digest()
    return hashlib.sha256(tag_hash + tag_hash)


_LEAF = _tag_prefix(b"LnLeaf")
_BRANCH = _tag_prefix(b"LnBranch")


def tagged_hash(tag: bytes, msg: bytes) -> bytes:
    """BOLT #12 / BIP 340: H(`tag`,`msg`) = SHA256(SHA256(`tag`) || SHA256(`tag`) || `msg`)."""
    h = _tag_prefix(tag)
    h.update(msg)
    return h.digest()


def _with_prefix(prefix: hashlib._Hash, msg: bytes) -> bytes:
    h = prefix.copy()
    h.update(msg)
    return h.digest()


def branch_hash(a: bytes, b: bytes) -> bytes:
    """BOLT #12: inner nodes are H("LnBranch", lesser-SHA256||greater-SHA256)."""
    return _with_prefix(_BRANCH, a + b if a < b else b + a)


def leaf_hashes(records: Sequence[TlvRecord]) -> list[bytes]:
    """One hash per non-signature record: the branch of its leaf and its nonce leaf."""
    if not records:
        raise DecodeError("tlv_stream", "the Merkle tree needs at least one TLV record")
    # BOLT #12: H("LnNonce"||first-tlv,tlv-type) where first-tlv is the numerically-first TLV
    # entry in the stream, and tlv-type is the "type" field (1-9 bytes) of the current tlv.
    nonce = _tag_prefix(b"LnNonce" + records[0].raw)
    out = []
    for record in records:
        if is_signature_type(record.type):
            continue
        type_bytes = record.raw[: _bigsize_width(record.raw[0])]
        out.append(branch_hash(_with_prefix(_LEAF, record.raw), _with_prefix(nonce, type_bytes)))
    if not out:
        raise DecodeError("tlv_stream", "no non-signature TLV record to hash")
    return out


def _bigsize_width(first: int) -> int:
    return {0xFD: 3, 0xFE: 5, 0xFF: 9}.get(first, 1)


def root_from_leaves(hashes: list[bytes]) -> bytes:
    """Join leaf pairs level by level; an odd node out waits for the next level (BOLT #12:
    "the deepest tree on the lowest-order leaves")."""
    level = list(hashes)
    while len(level) > 1:
        nxt = [branch_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_root_of_records(records: Sequence[TlvRecord]) -> bytes:
    return root_from_leaves(leaf_hashes(records))


def merkle_root(tlv_stream: bytes) -> bytes:
    """The spec's TLV Merkle root of a whole TLV stream (signature records 240-1000 skipped).

    Raises :class:`DecodeError` for a malformed stream or one without a non-signature record.
    """
    return merkle_root_of_records(read_records(tlv_stream))
