"""BIP 143 (segwit v0) and BIP 341 (taproot key path) signature hashes, and DER signatures."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from coincurve import PublicKey
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT
from coincurve.ecdsa import cdata_to_der

from lightspeed.bitcoin.taproot import tagged_hash
from lightspeed.bitcoin.tx import Transaction, TxOut, var_bytes
from lightspeed.crypto.hashes import sha256d
from lightspeed.crypto.secp256k1 import HALF_ORDER

SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
SIGHASH_DEFAULT = 0x00  # BIP 341: ALL, with a 64-byte signature carrying no type byte
TAPROOT_SIGHASH_TYPES = frozenset((0x00, 0x01, 0x02, 0x03, 0x81, 0x82, 0x83))


def bip143_sighash(
    tx: Transaction, input_index: int, script_code: bytes, amount_sat: int, sighash_type: int
) -> bytes:
    """BIP 143 signature hash of a segwit v0 input, for every sighash type."""
    anyone = sighash_type & SIGHASH_ANYONECANPAY
    base = sighash_type & 0x1F
    zero = bytes(32)
    prevouts = zero if anyone else sha256d(b"".join(i.prevout.serialize() for i in tx.inputs))
    sequences = (
        zero if anyone or base != SIGHASH_ALL
        else sha256d(b"".join(struct.pack("<I", i.sequence) for i in tx.inputs))
    )
    if base not in (SIGHASH_SINGLE, SIGHASH_NONE):
        outputs = sha256d(b"".join(o.serialize() for o in tx.outputs))
    elif base == SIGHASH_SINGLE and input_index < len(tx.outputs):
        outputs = sha256d(tx.outputs[input_index].serialize())
    else:
        outputs = zero
    txin = tx.inputs[input_index]
    return sha256d(b"".join((
        struct.pack("<i", tx.version),
        prevouts,
        sequences,
        txin.prevout.serialize(),
        var_bytes(script_code),
        struct.pack("<q", amount_sat),
        struct.pack("<I", txin.sequence),
        outputs,
        struct.pack("<I", tx.locktime),
        struct.pack("<I", sighash_type),
    )))


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def bip341_sighash(tx: Transaction, input_index: int, spent_outputs: Sequence[TxOut], sighash_type: int,
                   annex: bytes | None = None) -> bytes:
    """BIP 341 signature hash of a key path spend (``ext_flag`` 0).

    Unlike BIP 143 it commits to every input's spent amount and scriptPubKey (unless
    ANYONECANPAY), so a signer must know all the outputs the transaction spends, not only its
    own: that closes the fee lie a hardware wallet could be told about the other inputs.
    Raises ``ValueError`` for what BIP 341 says must fail (an unknown type, SINGLE without a
    matching output).
    """
    if sighash_type not in TAPROOT_SIGHASH_TYPES:
        raise ValueError(f"sighash type 0x{sighash_type:02x} is not a BIP 341 type")
    if len(spent_outputs) != len(tx.inputs):
        raise ValueError(f"{len(spent_outputs)} spent outputs given for {len(tx.inputs)} inputs")
    if not 0 <= input_index < len(tx.inputs):
        raise ValueError(f"input index {input_index} out of range")
    anyone = sighash_type & SIGHASH_ANYONECANPAY
    base = sighash_type & 0x03
    parts = [bytes([sighash_type]), struct.pack("<i", tx.version), struct.pack("<I", tx.locktime)]
    if not anyone:
        parts += [
            _sha256(b"".join(i.prevout.serialize() for i in tx.inputs)),
            _sha256(b"".join(struct.pack("<q", o.value_sat) for o in spent_outputs)),
            _sha256(b"".join(var_bytes(o.script_pubkey) for o in spent_outputs)),
            _sha256(b"".join(struct.pack("<I", i.sequence) for i in tx.inputs)),
        ]
    if base not in (SIGHASH_NONE, SIGHASH_SINGLE):
        parts.append(_sha256(b"".join(o.serialize() for o in tx.outputs)))
    parts.append(bytes([0 if annex is None else 1]))  # spend_type = ext_flag * 2 + annex_present
    txin = tx.inputs[input_index]
    if anyone:
        spent = spent_outputs[input_index]
        parts += [txin.prevout.serialize(), struct.pack("<q", spent.value_sat), var_bytes(spent.script_pubkey),
                  struct.pack("<I", txin.sequence)]
    else:
        parts.append(struct.pack("<I", input_index))
    if annex is not None:
        parts.append(_sha256(var_bytes(annex)))
    if base == SIGHASH_SINGLE:
        if input_index >= len(tx.outputs):
            raise ValueError("SIGHASH_SINGLE without an output at the input's index")
        parts.append(_sha256(tx.outputs[input_index].serialize()))
    return tagged_hash("TapSighash", b"\x00" + b"".join(parts))  # epoch 0


def sign_input(privkey: bytes, sighash: bytes, sighash_type: int) -> bytes:
    """DER signature (RFC 6979, low-S) followed by the sighash type byte.

    Calls libsecp256k1 directly: ``coincurve.PrivateKey(...)`` would first derive
    the public key, most of the cost of a one-off signature.
    """
    if len(sighash) != 32:
        raise ValueError("sighash must be 32 bytes")
    signature = ffi.new("secp256k1_ecdsa_signature *")
    if not lib.secp256k1_ecdsa_sign(GLOBAL_CONTEXT.ctx, signature, sighash, privkey, ffi.NULL, ffi.NULL):
        raise ValueError("invalid private key")
    return bytes(cdata_to_der(signature, GLOBAL_CONTEXT)) + bytes([sighash_type])


def is_strict_der(sig: bytes) -> bool:
    """BIP 66 strict DER (without the trailing sighash byte)."""
    if len(sig) < 8 or len(sig) > 72 or sig[0] != 0x30 or sig[1] != len(sig) - 2:
        return False
    r_len = sig[3]
    if sig[2] != 0x02 or r_len == 0 or 5 + r_len >= len(sig):
        return False
    s_len = sig[5 + r_len]
    if sig[4 + r_len] != 0x02 or s_len == 0 or r_len + s_len + 6 != len(sig):
        return False
    r, s = sig[4 : 4 + r_len], sig[6 + r_len :]
    for part in (r, s):
        if part[0] & 0x80 or (len(part) > 1 and part[0] == 0 and not part[1] & 0x80):
            return False
    return True


def der_low_s(sig: bytes) -> bool:
    r_len = sig[3]
    s = int.from_bytes(sig[6 + r_len :], "big")
    return 0 < s <= HALF_ORDER


def verify_der_signature(pubkey: bytes, sig_with_type: bytes, sighash: bytes) -> bool:
    """Strict DER, low-S, and a valid signature of ``sighash`` by ``pubkey`` (33-byte compressed)."""
    der = sig_with_type[:-1]
    if not is_strict_der(der) or not der_low_s(der):
        return False
    try:
        return bool(PublicKey(pubkey).verify(der, sighash, hasher=None))
    except (ValueError, TypeError):
        return False
