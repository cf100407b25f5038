"""Blocks of the embedded regtest chain, as Bitcoin Core's regtest would make them (pure functions).

A light client checks what it is given: Electrum compares the genesis hash with the one it
knows, links every 80-byte header to the previous one, checks the proof of work (on mainnet)
and proves a transaction's inclusion with a merkle branch to the header's merkle root. So the
genesis block here is Bitcoin Core's regtest genesis byte for byte, and every later block has
a real header: version, previous hash, merkle root of its txids, time, regtest ``bits``
(0x207fffff) and a nonce ground until the hash meets that target (half of all hashes do).
Coinbases carry the height (BIP 34) and, when the block has witness data, the BIP 141 witness
commitment.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.crypto.hashes import sha256d
from lightspeed.errors import DecodeError

HEADER_SIZE = 80
REGTEST_BITS = 0x207FFFFF
BLOCK_VERSION = 0x20000000  # BIP 9 "top bits", what Bitcoin Core mines
NULL_OUTPOINT = OutPoint(bytes(32), 0xFFFFFFFF)
WITNESS_RESERVED_VALUE = bytes(32)
WITNESS_COMMITMENT_HEADER = bytes.fromhex("aa21a9ed")

# Bitcoin Core's genesis coinbase (the same transaction on every network): its input script
# holds the Times headline, its single 50 BTC output pays a public key nobody can spend from.
_GENESIS_SCRIPT_SIG = bytes.fromhex(
    "04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e20"
    "6272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73")
_GENESIS_PUBKEY_SCRIPT = bytes.fromhex(
    "4104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51"
    "ec112de5c384df7ba0b8d578a4c702b6bf11d5fac")
GENESIS_COINBASE = Transaction(
    1, (TxIn(NULL_OUTPOINT, _GENESIS_SCRIPT_SIG, 0xFFFFFFFF),), (TxOut(50 * 10**8, _GENESIS_PUBKEY_SCRIPT),), 0)
GENESIS_TIME = 1_296_688_602
# Bitcoin Core, chainparams.cpp (CRegTestParams): CreateGenesisBlock(1296688602, 2, 0x207fffff, 1, 50 * COIN)


def bits_to_target(bits: int) -> int:
    """The compact ``nBits`` encoding as the 256-bit target a block hash must not exceed."""
    exponent, mantissa = bits >> 24, bits & 0x7FFFFF
    return mantissa << (8 * (exponent - 3)) if exponent > 3 else mantissa >> (8 * (3 - exponent))


REGTEST_TARGET = bits_to_target(REGTEST_BITS)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    version: int
    prev_hash: bytes  # internal byte order, as every hash in this module
    merkle_root: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return (struct.pack("<i", self.version) + self.prev_hash + self.merkle_root
                + struct.pack("<III", self.time, self.bits, self.nonce))

    @property
    def hash(self) -> bytes:
        return sha256d(self.serialize())

    def meets_target(self) -> bool:
        """Proof of work: the hash, read as a little-endian number, is at most the target of ``bits``."""
        return int.from_bytes(self.hash, "little") <= bits_to_target(self.bits)

    @classmethod
    def parse(cls, data: bytes) -> BlockHeader:
        if len(data) != HEADER_SIZE:
            raise DecodeError("block header", f"{len(data)} bytes, a header has {HEADER_SIZE}")
        version, = struct.unpack("<i", data[:4])
        time, bits, nonce = struct.unpack("<III", data[68:])
        return cls(version, data[4:36], data[36:68], time, bits, nonce)


def merkle_root(hashes: list[bytes]) -> bytes:
    """Bitcoin's merkle root (an odd level pairs its last hash with itself)."""
    return merkle_branch(hashes, 0)[1]


def merkle_branch(hashes: list[bytes], index: int) -> tuple[list[bytes], bytes]:
    """The siblings of ``hashes[index]`` from the leaves up (deepest first), and the root."""
    if not 0 <= index < len(hashes):
        raise IndexError(f"leaf {index} of {len(hashes)}")
    level, branch = list(hashes), []
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        branch.append(level[index ^ 1])
        index >>= 1
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return branch, level[0]


def root_from_branch(leaf: bytes, index: int, branch: list[bytes]) -> bytes:
    """The root a merkle branch proves for ``leaf`` at ``index`` (what a light client computes)."""
    node = leaf
    for sibling in branch:
        node = sha256d(sibling + node) if index & 1 else sha256d(node + sibling)
        index >>= 1
    return node


def mine_header(prev_hash: bytes, txids: list[bytes], time: int, version: int = BLOCK_VERSION,
                bits: int = REGTEST_BITS) -> BlockHeader:
    """A header over ``txids`` whose nonce is ground until the hash meets ``bits``'s target."""
    header = BlockHeader(version, prev_hash, merkle_root(txids), time, bits, 0)
    prefix, target = header.serialize()[:76], bits_to_target(bits)
    for nonce in range(2**32):
        if int.from_bytes(sha256d(prefix + struct.pack("<I", nonce)), "little") <= target:
            return BlockHeader(version, prev_hash, header.merkle_root, time, bits, nonce)
    raise ValueError("no nonce meets the target: change the time and try again")  # never at regtest's target


def script_num(value: int) -> bytes:
    """A push of ``value`` as Script pushes numbers (BIP 34 height): OP_0, OP_1..OP_16, or minimal bytes."""
    if value == 0:
        return b"\x00"
    if 1 <= value <= 16:
        return bytes([0x50 + value])
    data = bytearray()
    while value:
        data.append(value & 0xFF)
        value >>= 8
    if data[-1] & 0x80:
        data.append(0)
    return bytes([len(data)]) + bytes(data)


def coinbase(height: int, value_sat: int, script_pubkey: bytes, wtxids: list[bytes] | None = None) -> Transaction:
    """The coinbase of block ``height``: BIP 34 height, then OP_0 (as Bitcoin Core's miner writes it).

    ``wtxids`` (the block's other transactions, when any has witness data) adds the BIP 141
    commitment output and the coinbase's witness reserved value.
    """
    outputs = [TxOut(value_sat, script_pubkey)]
    witness: tuple[bytes, ...] = ()
    if wtxids is not None:
        # BIP 141: the coinbase's wtxid counts as 0; commitment = SHA256d(witness root || reserved value)
        commitment = sha256d(merkle_root([bytes(32), *wtxids]) + WITNESS_RESERVED_VALUE)
        outputs.append(TxOut(0, b"\x6a\x24" + WITNESS_COMMITMENT_HEADER + commitment))
        witness = (WITNESS_RESERVED_VALUE,)
    txin = TxIn(NULL_OUTPOINT, script_num(height) + b"\x00", 0xFFFFFFFF, witness)
    return Transaction(2, (txin,), tuple(outputs), 0)


GENESIS_HEADER = BlockHeader(1, bytes(32), merkle_root([GENESIS_COINBASE.txid]), GENESIS_TIME, REGTEST_BITS, 2)
GENESIS_HASH = GENESIS_HEADER.hash  # = REGTEST.chain_hash (BOLT 0's chain_hash is in this byte order)
