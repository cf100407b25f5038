"""Bitcoin scripts: opcodes, builders for the standard outputs Lightning uses, and a parser."""

from __future__ import annotations

from lightspeed.crypto.hashes import hash160, sha256
from lightspeed.errors import DecodeError

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_PUSHDATA2 = 0x4D
OP_PUSHDATA4 = 0x4E
OP_1NEGATE = 0x4F
OP_1 = 0x51
OP_2 = 0x52
OP_16 = 0x60
OP_NOP = 0x61
OP_IF = 0x63
OP_NOTIF = 0x64
OP_ELSE = 0x67
OP_ENDIF = 0x68
OP_VERIFY = 0x69
OP_RETURN = 0x6A
OP_TOALTSTACK = 0x6B
OP_FROMALTSTACK = 0x6C
OP_2DROP = 0x6D
OP_2DUP = 0x6E
OP_IFDUP = 0x73
OP_DEPTH = 0x74
OP_DROP = 0x75
OP_DUP = 0x76
OP_NIP = 0x77
OP_OVER = 0x78
OP_PICK = 0x79
OP_ROLL = 0x7A
OP_ROT = 0x7B
OP_SWAP = 0x7C
OP_TUCK = 0x7D
OP_SIZE = 0x82
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_1ADD = 0x8B
OP_1SUB = 0x8C
OP_NOT = 0x91
OP_0NOTEQUAL = 0x92
OP_ADD = 0x93
OP_SUB = 0x94
OP_BOOLAND = 0x9A
OP_BOOLOR = 0x9B
OP_NUMEQUAL = 0x9C
OP_NUMEQUALVERIFY = 0x9D
OP_LESSTHAN = 0x9F
OP_GREATERTHAN = 0xA0
OP_MIN = 0xA3
OP_MAX = 0xA4
OP_WITHIN = 0xA5
OP_RIPEMD160 = 0xA6
OP_SHA256 = 0xA8
OP_HASH160 = 0xA9
OP_HASH256 = 0xAA
OP_CHECKSIG = 0xAC
OP_CHECKSIGVERIFY = 0xAD
OP_CHECKMULTISIG = 0xAE
OP_CHECKMULTISIGVERIFY = 0xAF
OP_NOP1 = 0xB0
OP_CHECKLOCKTIMEVERIFY = 0xB1
OP_CHECKSEQUENCEVERIFY = 0xB2


def push_data(data: bytes) -> bytes:
    """The minimal push of ``data`` (BIP 62 minimal-push rule)."""
    n = len(data)
    if n == 0:
        return bytes([OP_0])
    if n == 1 and 1 <= data[0] <= 16:
        return bytes([OP_1 + data[0] - 1])
    if n == 1 and data[0] == 0x81:
        return bytes([OP_1NEGATE])
    if n < OP_PUSHDATA1:
        return bytes([n]) + data
    if n <= 0xFF:
        return bytes([OP_PUSHDATA1, n]) + data
    if n <= 0xFFFF:
        return bytes([OP_PUSHDATA2]) + n.to_bytes(2, "little") + data
    return bytes([OP_PUSHDATA4]) + n.to_bytes(4, "little") + data


def encode_num(value: int) -> bytes:
    """Script number: little-endian magnitude with a sign bit."""
    if value == 0:
        return b""
    out = bytearray()
    magnitude = abs(value)
    while magnitude:
        out.append(magnitude & 0xFF)
        magnitude >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if value < 0 else 0)
    elif value < 0:
        out[-1] |= 0x80
    return bytes(out)


def decode_num(data: bytes, max_size: int = 4) -> int:
    """Script number, enforcing the size limit and minimal encoding (as consensus does for CSV/CLTV: 5)."""
    if len(data) > max_size:
        raise ValueError(f"script number longer than {max_size} bytes")
    if not data:
        return 0
    if data[-1] & 0x7F == 0 and (len(data) == 1 or not data[-2] & 0x80):
        raise ValueError("script number is not minimally encoded")
    value = int.from_bytes(data, "little")
    if data[-1] & 0x80:
        return -(value & ~(0x80 << (8 * (len(data) - 1))))
    return value


def push_int(value: int) -> bytes:
    """Minimal push of a script number (OP_0, OP_1NEGATE, OP_1..OP_16, or data)."""
    if value == 0:
        return bytes([OP_0])
    if value == -1:
        return bytes([OP_1NEGATE])
    if 1 <= value <= 16:
        return bytes([OP_1 + value - 1])
    return push_data(encode_num(value))


def script(*items: int | bytes) -> bytes:
    """Concatenate a script: ints are opcodes, bytes are pushed minimally."""
    return b"".join(bytes([item]) if isinstance(item, int) else push_data(item) for item in items)


def p2wsh_script(witness_script: bytes) -> bytes:
    return bytes([OP_0, 32]) + sha256(witness_script)


def p2wpkh_script(pubkey: bytes) -> bytes:
    return bytes([OP_0, 20]) + hash160(pubkey)


def p2pkh_script_code(pubkey_hash: bytes) -> bytes:
    """The BIP 143 scriptCode of a P2WPKH input."""
    return bytes([OP_DUP, OP_HASH160, 20]) + pubkey_hash + bytes([OP_EQUALVERIFY, OP_CHECKSIG])


def multisig_2of2(pubkey1: bytes, pubkey2: bytes) -> bytes:
    """BOLT 3 funding script: ``2 <pubkey1> <pubkey2> 2 OP_CHECKMULTISIG``, keys in lexicographic order."""
    first, second = sorted((pubkey1, pubkey2))
    return script(OP_2, first, second, OP_2, OP_CHECKMULTISIG)


def parse_script(data: bytes) -> list[tuple[int, bytes | None]]:
    """Script to ``(opcode, pushed data or None)`` pairs; raises DecodeError on a truncated push."""
    ops: list[tuple[int, bytes | None]] = []
    pos = 0
    while pos < len(data):
        op = data[pos]
        pos += 1
        if 0 < op < OP_PUSHDATA1:
            size = op
        elif op == OP_PUSHDATA1:
            size, pos = _length(data, pos, 1)
        elif op == OP_PUSHDATA2:
            size, pos = _length(data, pos, 2)
        elif op == OP_PUSHDATA4:
            size, pos = _length(data, pos, 4)
        else:
            ops.append((op, None))
            continue
        if pos + size > len(data):
            raise DecodeError("script", f"push of {size} bytes runs past the end")
        ops.append((op, data[pos : pos + size]))
        pos += size
    return ops


def _length(data: bytes, pos: int, width: int) -> tuple[int, int]:
    if pos + width > len(data):
        raise DecodeError("script", "truncated push length")
    return int.from_bytes(data[pos : pos + width], "little"), pos + width
