"""BOLT 3 witness scripts: funding, to_local, to_remote (anchors), anchors, offered and received HTLCs.

Each function returns the *witness script*; wrap it with ``p2wsh_script`` for
the output. Keys are 33-byte compressed points; hashes are raw bytes.
"""

from __future__ import annotations

from lightspeed.bitcoin.script import (
    OP_1,
    OP_2,
    OP_16,
    OP_CHECKLOCKTIMEVERIFY,
    OP_CHECKMULTISIG,
    OP_CHECKSEQUENCEVERIFY,
    OP_CHECKSIG,
    OP_CHECKSIGVERIFY,
    OP_DROP,
    OP_DUP,
    OP_ELSE,
    OP_ENDIF,
    OP_EQUAL,
    OP_EQUALVERIFY,
    OP_HASH160,
    OP_IF,
    OP_IFDUP,
    OP_NOTIF,
    OP_SIZE,
    OP_SWAP,
    multisig_2of2,
    push_int,
    script,
)
from lightspeed.crypto.hashes import hash160, ripemd160

ANCHOR_OUTPUT_SAT = 330
"""BOLT #3: the amount of each anchor output is fixed at 330 sats."""


def funding_script(funding_pubkey_a: bytes, funding_pubkey_b: bytes) -> bytes:
    """``2 <pubkey1> <pubkey2> 2 OP_CHECKMULTISIG``.

    BOLT #3: pubkey1 is the lexicographically lesser of the two funding_pubkey.
    """
    low, high = sorted((funding_pubkey_a, funding_pubkey_b))
    return multisig_2of2(low, high)


def to_local_script(revocation_pubkey: bytes, to_self_delay: int, delayed_pubkey: bytes) -> bytes:
    """``to_local`` output, also the output of HTLC-success and HTLC-timeout transactions."""
    return (
        script(OP_IF, revocation_pubkey, OP_ELSE)
        + push_int(to_self_delay)
        + script(OP_CHECKSEQUENCEVERIFY, OP_DROP, delayed_pubkey, OP_ENDIF, OP_CHECKSIG)
    )


def to_remote_anchors_script(remote_pubkey: bytes) -> bytes:
    """``to_remote`` under option_anchors: ``<remotepubkey> OP_CHECKSIGVERIFY 1 OP_CHECKSEQUENCEVERIFY``."""
    return script(remote_pubkey, OP_CHECKSIGVERIFY, OP_1, OP_CHECKSEQUENCEVERIFY)


def anchor_script(funding_pubkey: bytes) -> bytes:
    """``to_local_anchor``/``to_remote_anchor``: the owner at once, anyone after 16 blocks."""
    return script(
        funding_pubkey,
        OP_CHECKSIG,
        OP_IFDUP,
        OP_NOTIF,
        OP_16,
        OP_CHECKSEQUENCEVERIFY,
        OP_ENDIF,
    )


def _csv1(anchors: bool) -> bytes:
    # BOLT #3 (option_anchors): "1 OP_CHECKSEQUENCEVERIFY OP_DROP" before the final OP_ENDIF.
    return script(OP_1, OP_CHECKSEQUENCEVERIFY, OP_DROP) if anchors else b""


def offered_htlc_script(
    revocation_pubkey: bytes,
    local_htlcpubkey: bytes,
    remote_htlcpubkey: bytes,
    payment_hash: bytes,
    anchors: bool,
) -> bytes:
    """HTLC offered by the commitment owner: remote takes it with the preimage, we via HTLC-timeout."""
    return (
        script(
            OP_DUP, OP_HASH160, hash160(revocation_pubkey), OP_EQUAL, OP_IF, OP_CHECKSIG, OP_ELSE
        )
        + script(remote_htlcpubkey, OP_SWAP, OP_SIZE)
        + push_int(32)
        + script(
            OP_EQUAL, OP_NOTIF, OP_DROP, OP_2, OP_SWAP, local_htlcpubkey, OP_2, OP_CHECKMULTISIG
        )
        + script(
            OP_ELSE, OP_HASH160, ripemd160(payment_hash), OP_EQUALVERIFY, OP_CHECKSIG, OP_ENDIF
        )
        + _csv1(anchors)
        + bytes([OP_ENDIF])
    )


def received_htlc_script(
    revocation_pubkey: bytes,
    local_htlcpubkey: bytes,
    remote_htlcpubkey: bytes,
    payment_hash: bytes,
    cltv_expiry: int,
    anchors: bool,
) -> bytes:
    """HTLC received by the commitment owner: we take it via HTLC-success, remote after ``cltv_expiry``."""
    return (
        script(
            OP_DUP, OP_HASH160, hash160(revocation_pubkey), OP_EQUAL, OP_IF, OP_CHECKSIG, OP_ELSE
        )
        + script(remote_htlcpubkey, OP_SWAP, OP_SIZE)
        + push_int(32)
        + script(OP_EQUAL, OP_IF, OP_HASH160, ripemd160(payment_hash), OP_EQUALVERIFY)
        + script(OP_2, OP_SWAP, local_htlcpubkey, OP_2, OP_CHECKMULTISIG, OP_ELSE, OP_DROP)
        + push_int(cltv_expiry)
        + script(OP_CHECKLOCKTIMEVERIFY, OP_DROP, OP_CHECKSIG, OP_ENDIF)
        + _csv1(anchors)
        + bytes([OP_ENDIF])
    )
