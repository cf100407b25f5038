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
    push_data,
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


# The HTLC scripts are fixed opcode runs around four pushes; the runs are
# assembled once here, so building 2 x 483 HTLC scripts costs only the pushes.
_CSV1 = script(OP_1, OP_CHECKSEQUENCEVERIFY, OP_DROP)  # BOLT #3 option_anchors addition
_HTLC_HEAD = script(OP_DUP, OP_HASH160)
_HTLC_REVOKE = script(OP_EQUAL, OP_IF, OP_CHECKSIG, OP_ELSE)
_HTLC_SIZE_32 = script(OP_SWAP, OP_SIZE) + push_int(32) + script(OP_EQUAL)
_OFFERED_TIMEOUT = script(OP_NOTIF, OP_DROP, OP_2, OP_SWAP)
_OFFERED_PREIMAGE = script(OP_2, OP_CHECKMULTISIG, OP_ELSE, OP_HASH160)
_OFFERED_TAIL = script(OP_EQUALVERIFY, OP_CHECKSIG, OP_ENDIF)
_RECEIVED_PREIMAGE = script(OP_IF, OP_HASH160)
_RECEIVED_MULTISIG = script(OP_EQUALVERIFY, OP_2, OP_SWAP)
_RECEIVED_TIMEOUT = script(OP_2, OP_CHECKMULTISIG, OP_ELSE, OP_DROP)
_RECEIVED_TAIL = script(OP_CHECKLOCKTIMEVERIFY, OP_DROP, OP_CHECKSIG, OP_ENDIF)
_ENDIF = script(OP_ENDIF)


def offered_htlc_script(
    revocation_pubkey: bytes,
    local_htlcpubkey: bytes,
    remote_htlcpubkey: bytes,
    payment_hash: bytes,
    anchors: bool,
) -> bytes:
    """HTLC offered by the commitment owner: remote takes it with the preimage, we via HTLC-timeout.

    ``OP_DUP OP_HASH160 <RIPEMD160(SHA256(revocationpubkey))> OP_EQUAL OP_IF OP_CHECKSIG
    OP_ELSE <remote_htlcpubkey> OP_SWAP OP_SIZE 32 OP_EQUAL OP_NOTIF OP_DROP 2 OP_SWAP
    <local_htlcpubkey> 2 OP_CHECKMULTISIG OP_ELSE OP_HASH160 <RIPEMD160(payment_hash)>
    OP_EQUALVERIFY OP_CHECKSIG OP_ENDIF [1 OP_CHECKSEQUENCEVERIFY OP_DROP] OP_ENDIF``
    """
    return b"".join(
        (
            _HTLC_HEAD,
            push_data(hash160(revocation_pubkey)),
            _HTLC_REVOKE,
            push_data(remote_htlcpubkey),
            _HTLC_SIZE_32,
            _OFFERED_TIMEOUT,
            push_data(local_htlcpubkey),
            _OFFERED_PREIMAGE,
            push_data(ripemd160(payment_hash)),
            _OFFERED_TAIL,
            _CSV1 if anchors else b"",
            _ENDIF,
        )
    )


def received_htlc_script(
    revocation_pubkey: bytes,
    local_htlcpubkey: bytes,
    remote_htlcpubkey: bytes,
    payment_hash: bytes,
    cltv_expiry: int,
    anchors: bool,
) -> bytes:
    """HTLC received by the commitment owner: we take it via HTLC-success, remote after ``cltv_expiry``.

    ``OP_DUP OP_HASH160 <RIPEMD160(SHA256(revocationpubkey))> OP_EQUAL OP_IF OP_CHECKSIG
    OP_ELSE <remote_htlcpubkey> OP_SWAP OP_SIZE 32 OP_EQUAL OP_IF OP_HASH160
    <RIPEMD160(payment_hash)> OP_EQUALVERIFY 2 OP_SWAP <local_htlcpubkey> 2 OP_CHECKMULTISIG
    OP_ELSE OP_DROP <cltv_expiry> OP_CHECKLOCKTIMEVERIFY OP_DROP OP_CHECKSIG OP_ENDIF
    [1 OP_CHECKSEQUENCEVERIFY OP_DROP] OP_ENDIF``
    """
    return b"".join(
        (
            _HTLC_HEAD,
            push_data(hash160(revocation_pubkey)),
            _HTLC_REVOKE,
            push_data(remote_htlcpubkey),
            _HTLC_SIZE_32,
            _RECEIVED_PREIMAGE,
            push_data(ripemd160(payment_hash)),
            _RECEIVED_MULTISIG,
            push_data(local_htlcpubkey),
            _RECEIVED_TIMEOUT,
            push_int(cltv_expiry),
            _RECEIVED_TAIL,
            _CSV1 if anchors else b"",
            _ENDIF,
        )
    )
