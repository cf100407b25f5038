"""Interim stand-in for ``lightspeed.bitcoin.tx`` / ``script`` / ``sighash``.

Those modules are being written elsewhere with the API mirrored here; until they
land, the BOLT 3 builders import these names from this one module, so switching
is a change of imports. Only what BOLT 3 needs: segwit v0 serialization and
parsing, P2WSH/P2WPKH scripts, BIP 143 signature hashes, DER signing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT
from coincurve.ecdsa import cdata_to_der

from lightspeed.crypto.hashes import hash160, sha256, sha256d
from lightspeed.errors import DecodeError

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_1 = 0x51
OP_2 = 0x52
OP_16 = 0x60
OP_NOTIF = 0x64
OP_IF = 0x63
OP_ELSE = 0x67
OP_ENDIF = 0x68
OP_DROP = 0x75
OP_IFDUP = 0x73
OP_DUP = 0x76
OP_SWAP = 0x7C
OP_SIZE = 0x82
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_HASH160 = 0xA9
OP_CHECKSIG = 0xAC
OP_CHECKSIGVERIFY = 0xAD
OP_CHECKMULTISIG = 0xAE
OP_CHECKLOCKTIMEVERIFY = 0xB1
OP_CHECKSEQUENCEVERIFY = 0xB2

SIGHASH_ALL = 0x01
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80


def push_data(data: bytes) -> bytes:
    """Minimal push of ``data`` (BOLT 3 scripts push at most 33 bytes)."""
    if len(data) < OP_PUSHDATA1:
        return bytes([len(data)]) + data
    if len(data) <= 0xFF:
        return bytes([OP_PUSHDATA1, len(data)]) + data
    raise ValueError("push too large for BOLT 3 scripts")


def push_int(value: int) -> bytes:
    """Minimal script number push (OP_0, OP_1..OP_16, or little-endian with sign byte)."""
    if value == 0:
        return bytes([OP_0])
    if 1 <= value <= 16:
        return bytes([OP_1 + value - 1])
    out = bytearray()
    magnitude = abs(value)
    while magnitude:
        out.append(magnitude & 0xFF)
        magnitude >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if value < 0 else 0)
    elif value < 0:
        out[-1] |= 0x80
    return push_data(bytes(out))


def script(*items: int | bytes) -> bytes:
    """Concatenate a script: ints are opcodes, bytes are pushed."""
    return b"".join(bytes([item]) if isinstance(item, int) else push_data(item) for item in items)


def p2wsh_script(witness_script: bytes) -> bytes:
    return b"\x00\x20" + sha256(witness_script)


def p2wpkh_script(pubkey: bytes) -> bytes:
    return b"\x00\x14" + hash160(pubkey)


def multisig_2of2(pubkey1: bytes, pubkey2: bytes) -> bytes:
    return script(OP_2, pubkey1, pubkey2, OP_2, OP_CHECKMULTISIG)


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def _var_bytes(data: bytes) -> bytes:
    return _varint(len(data)) + data


@dataclass(frozen=True, slots=True)
class OutPoint:
    txid: bytes  # internal byte order
    index: int

    def serialize(self) -> bytes:
        return self.txid + struct.pack("<I", self.index)


@dataclass(frozen=True, slots=True)
class TxIn:
    prevout: OutPoint
    script_sig: bytes = b""
    sequence: int = 0xFFFFFFFF
    witness: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class TxOut:
    value_sat: int
    script_pubkey: bytes

    def serialize(self) -> bytes:
        return struct.pack("<q", self.value_sat) + _var_bytes(self.script_pubkey)


@dataclass(frozen=True, slots=True)
class Transaction:
    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int

    def serialize(self, include_witness: bool = True) -> bytes:
        with_witness = include_witness and any(txin.witness for txin in self.inputs)
        out = bytearray(struct.pack("<I", self.version))
        if with_witness:
            out += b"\x00\x01"
        out += _varint(len(self.inputs))
        for txin in self.inputs:
            out += txin.prevout.serialize() + _var_bytes(txin.script_sig)
            out += struct.pack("<I", txin.sequence)
        out += _varint(len(self.outputs))
        for txout in self.outputs:
            out += txout.serialize()
        if with_witness:
            for txin in self.inputs:
                out += _varint(len(txin.witness))
                for item in txin.witness:
                    out += _var_bytes(item)
        out += struct.pack("<I", self.locktime)
        return bytes(out)

    @property
    def txid(self) -> bytes:
        """Double SHA-256 of the witness-stripped serialization (internal byte order)."""
        return sha256d(self.serialize(include_witness=False))

    @classmethod
    def parse(cls, data: bytes) -> Transaction:
        reader = _Reader(data)
        version = reader.u32("version")
        segwit = reader.peek(2) == b"\x00\x01"
        if segwit:
            reader.take(2, "segwit marker")
        inputs = []
        for _ in range(reader.varint("input count")):
            txid = reader.take(32, "prevout txid")
            index = reader.u32("prevout index")
            script_sig = reader.take(reader.varint("script_sig length"), "script_sig")
            inputs.append(TxIn(OutPoint(txid, index), script_sig, reader.u32("sequence")))
        outputs = []
        for _ in range(reader.varint("output count")):
            value = struct.unpack("<q", reader.take(8, "output value"))[0]
            outputs.append(TxOut(value, reader.take(reader.varint("script length"), "script")))
        if segwit:
            for i, txin in enumerate(inputs):
                items = tuple(
                    reader.take(reader.varint("witness item length"), "witness item")
                    for _ in range(reader.varint("witness count"))
                )
                inputs[i] = TxIn(txin.prevout, txin.script_sig, txin.sequence, items)
        locktime = reader.u32("locktime")
        if reader.pos != len(data):
            raise DecodeError("transaction", "trailing bytes")
        return cls(version, tuple(inputs), tuple(outputs), locktime)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def peek(self, n: int) -> bytes:
        return self.data[self.pos : self.pos + n]

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(f"transaction {field}", "truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u32(self, field: str) -> int:
        return int(struct.unpack("<I", self.take(4, field))[0])

    def varint(self, field: str) -> int:
        first = self.take(1, field)[0]
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        return int.from_bytes(self.take(size, field), "little")


def bip143_sighash(
    tx: Transaction, input_index: int, script_code: bytes, amount_sat: int, sighash_type: int
) -> bytes:
    """BIP 143 signature hash of a segwit v0 input."""
    anyone = sighash_type & SIGHASH_ANYONECANPAY
    base = sighash_type & 0x1F
    zero = bytes(32)
    prevouts = zero if anyone else sha256d(b"".join(i.prevout.serialize() for i in tx.inputs))
    sequences = (
        zero
        if anyone or base != SIGHASH_ALL
        else sha256d(b"".join(struct.pack("<I", i.sequence) for i in tx.inputs))
    )
    if base == SIGHASH_ALL:
        outputs = sha256d(b"".join(o.serialize() for o in tx.outputs))
    elif base == SIGHASH_SINGLE and input_index < len(tx.outputs):
        outputs = sha256d(tx.outputs[input_index].serialize())
    else:
        outputs = zero
    txin = tx.inputs[input_index]
    preimage = b"".join(
        (
            struct.pack("<I", tx.version),
            prevouts,
            sequences,
            txin.prevout.serialize(),
            _var_bytes(script_code),
            struct.pack("<q", amount_sat),
            struct.pack("<I", txin.sequence),
            outputs,
            struct.pack("<I", tx.locktime),
            struct.pack("<I", sighash_type),
        )
    )
    return sha256d(preimage)


def sign_input(privkey: bytes, sighash: bytes, sighash_type: int) -> bytes:
    """DER signature (RFC 6979, low-S) followed by the sighash type byte.

    Calls libsecp256k1 directly: ``coincurve.PrivateKey(...)`` would first
    derive the public key and an x-only keypair, two thirds of the cost of a
    one-off signature.
    """
    if len(sighash) != 32:
        raise ValueError("sighash must be 32 bytes")
    signature = ffi.new("secp256k1_ecdsa_signature *")
    if not lib.secp256k1_ecdsa_sign(
        GLOBAL_CONTEXT.ctx, signature, sighash, privkey, ffi.NULL, ffi.NULL
    ):
        raise ValueError("invalid private key")
    return bytes(cdata_to_der(signature, GLOBAL_CONTEXT)) + bytes([sighash_type])
