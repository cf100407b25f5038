"""Bitcoin transactions with segwit witnesses: parse, serialize, txid/wtxid, weight.

Frozen dataclasses with bytes fields; ``txid``s are in internal byte order (as
serialized; ``txid_hex`` shows the usual reversed display form).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from lightspeed.crypto.hashes import sha256d
from lightspeed.errors import DecodeError

MAX_MONEY_SAT = 21_000_000 * 100_000_000
SEQUENCE_FINAL = 0xFFFFFFFF


def varint(n: int) -> bytes:
    """Bitcoin's CompactSize."""
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def var_bytes(data: bytes) -> bytes:
    return varint(len(data)) + data


@dataclass(frozen=True, slots=True)
class OutPoint:
    txid: bytes  # internal byte order
    index: int

    def serialize(self) -> bytes:
        return self.txid + struct.pack("<I", self.index)

    @property
    def txid_hex(self) -> str:
        return self.txid[::-1].hex()

    def __str__(self) -> str:
        return f"{self.txid_hex}:{self.index}"


@dataclass(frozen=True, slots=True)
class TxIn:
    prevout: OutPoint
    script_sig: bytes = b""
    sequence: int = SEQUENCE_FINAL
    witness: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class TxOut:
    value_sat: int
    script_pubkey: bytes

    def serialize(self) -> bytes:
        return struct.pack("<q", self.value_sat) + var_bytes(self.script_pubkey)


@dataclass(frozen=True, slots=True)
class Transaction:
    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int = 0

    def serialize(self, include_witness: bool = True) -> bytes:
        with_witness = include_witness and any(txin.witness for txin in self.inputs)
        out = bytearray(struct.pack("<i", self.version))
        if with_witness:
            out += b"\x00\x01"
        out += varint(len(self.inputs))
        for txin in self.inputs:
            out += txin.prevout.serialize() + var_bytes(txin.script_sig) + struct.pack("<I", txin.sequence)
        out += varint(len(self.outputs))
        for txout in self.outputs:
            out += txout.serialize()
        if with_witness:
            for txin in self.inputs:
                out += varint(len(txin.witness))
                for item in txin.witness:
                    out += var_bytes(item)
        out += struct.pack("<I", self.locktime)
        return bytes(out)

    @property
    def txid(self) -> bytes:
        """Double SHA-256 of the witness-stripped serialization (internal byte order)."""
        return sha256d(self.serialize(include_witness=False))

    @property
    def txid_hex(self) -> str:
        return self.txid[::-1].hex()

    @property
    def wtxid(self) -> bytes:
        return sha256d(self.serialize())

    @property
    def weight(self) -> int:
        """BIP 141: 3 x stripped size + total size."""
        return 3 * len(self.serialize(include_witness=False)) + len(self.serialize())

    @property
    def vsize(self) -> int:
        return -(-self.weight // 4)

    @property
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].prevout == OutPoint(bytes(32), 0xFFFFFFFF)

    def with_witness(self, index: int, witness: tuple[bytes, ...]) -> Transaction:
        inputs = list(self.inputs)
        inputs[index] = replace(inputs[index], witness=witness)
        return replace(self, inputs=tuple(inputs))

    def outpoint(self, index: int) -> OutPoint:
        return OutPoint(self.txid, index)

    @classmethod
    def parse(cls, data: bytes) -> Transaction:
        """Parse a (segwit or legacy) transaction; raises DecodeError naming the field."""
        tx, end = cls.parse_prefix(data, 0)
        if end != len(data):
            raise DecodeError("transaction", f"{len(data) - end} trailing bytes")
        return tx

    @classmethod
    def parse_prefix(cls, data: bytes, start: int) -> tuple[Transaction, int]:
        """The transaction serialized at ``data[start:]`` and where it ends (a block holds several)."""
        reader = _Reader(data)
        reader.pos = start
        version = struct.unpack("<i", reader.take(4, "version"))[0]
        segwit = reader.peek(2) == b"\x00\x01"
        if segwit:
            reader.take(2, "segwit marker")
        inputs = []
        for _ in range(reader.count("input count", 41)):
            txid = reader.take(32, "prevout txid")
            index = reader.u32("prevout index")
            script_sig = reader.take(reader.count("script_sig length", 1), "script_sig")
            inputs.append(TxIn(OutPoint(txid, index), script_sig, reader.u32("sequence")))
        outputs = []
        for _ in range(reader.count("output count", 9)):
            value = struct.unpack("<q", reader.take(8, "output value"))[0]
            outputs.append(TxOut(value, reader.take(reader.count("script length", 1), "script")))
        if segwit:
            for i, txin in enumerate(inputs):
                items = tuple(
                    reader.take(reader.count("witness item length", 1), "witness item")
                    for _ in range(reader.count("witness count", 1))
                )
                inputs[i] = replace(txin, witness=items)
            if not any(txin.witness for txin in inputs):
                raise DecodeError("transaction witness", "segwit marker with no witness data")
        locktime = reader.u32("locktime")
        return cls(version, tuple(inputs), tuple(outputs), locktime), reader.pos


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

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

    def count(self, field: str, min_item_size: int) -> int:
        """A CompactSize that must be canonical and fit in what is left."""
        first = self.take(1, field)[0]
        if first < 0xFD:
            value = first
        else:
            size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
            value = int.from_bytes(self.take(size, field), "little")
            if value < {2: 0xFD, 4: 0x10000, 8: 0x100000000}[size]:
                raise DecodeError(f"transaction {field}", "non-canonical CompactSize")
        if value * min_item_size > len(self.data) - self.pos:
            raise DecodeError(f"transaction {field}", f"{value} does not fit in the remaining bytes")
        return value
