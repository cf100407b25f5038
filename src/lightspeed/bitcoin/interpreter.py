"""A witness script interpreter: enough Bitcoin Script to run every BOLT 3 script, and taproot key paths.

This executes scripts; it does not match templates. It covers P2WPKH, P2WSH
and the opcodes the Lightning scripts use (CHECKSIG(VERIFY), CHECKMULTISIG,
hashes, EQUAL(VERIFY), IF/NOTIF/ELSE/ENDIF, CSV, CLTV, stack and arithmetic
operations), with the segwit v0 rules: minimal IF arguments, empty dummy for
CHECKMULTISIG, failed signatures must be empty (NULLFAIL), strict DER low-S
signatures, compressed keys, and a clean stack holding exactly one true value.
Witness v1 (P2TR) outputs are spent by the key path (BIP 341: one BIP 340 signature of the
BIP 341 signature hash, which commits to every spent output); script path spends are refused.
Anything outside that subset fails with a reason rather than being guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightspeed.bitcoin import script as op
from lightspeed.bitcoin.script import decode_num, encode_num, parse_script
from lightspeed.bitcoin.sighash import bip143_sighash, bip341_sighash, verify_der_signature
from lightspeed.bitcoin.taproot import schnorr_verify
from lightspeed.bitcoin.tx import Transaction, TxOut
from lightspeed.crypto.hashes import hash160, ripemd160, sha256, sha256d
from lightspeed.errors import DecodeError

LOCKTIME_THRESHOLD = 500_000_000
SEQUENCE_DISABLE_FLAG = 1 << 31
SEQUENCE_TYPE_FLAG = 1 << 22
SEQUENCE_MASK = 0x0000FFFF
MAX_STACK_ITEM = 520
MAX_OPS = 201


class ScriptError(Exception):
    """The script failed; the message says why."""


def _true(item: bytes) -> bool:
    for i, byte in enumerate(item):
        if byte:
            return not (i == len(item) - 1 and byte == 0x80)
    return False


def _bool(value: bool) -> bytes:
    return b"\x01" if value else b""


class _Machine:
    def __init__(self, tx: Transaction, index: int, amount_sat: int, script_code: bytes) -> None:
        self.tx, self.index, self.amount, self.script_code = tx, index, amount_sat, script_code
        self.stack: list[bytes] = []
        self.alt: list[bytes] = []

    def pop(self) -> bytes:
        if not self.stack:
            raise ScriptError("stack underflow")
        return self.stack.pop()

    def pop_num(self, max_size: int = 4) -> int:
        try:
            return decode_num(self.pop(), max_size)
        except ValueError as exc:
            raise ScriptError(str(exc)) from None

    def check_sig(self, signature: bytes, pubkey: bytes) -> bool:
        if len(pubkey) != 33 or pubkey[0] not in (2, 3):
            raise ScriptError("public key is not compressed (segwit v0 requires compressed keys)")
        if not signature:
            return False
        sighash = bip143_sighash(self.tx, self.index, self.script_code, self.amount, signature[-1])
        if signature[-1] & ~0x80 not in (1, 2, 3):
            raise ScriptError("unknown sighash type")
        if not verify_der_signature(pubkey, signature, sighash):
            raise ScriptError("signature does not verify")  # NULLFAIL: a failing signature must be empty
        return True

    def run(self, script_bytes: bytes) -> None:
        try:
            ops = parse_script(script_bytes)
        except DecodeError as exc:
            raise ScriptError(exc.reason) from None
        executing: list[bool] = []
        op_count = 0
        for code, data in ops:
            active = all(executing)
            if code > op.OP_16:
                op_count += 1
                if op_count > MAX_OPS:
                    raise ScriptError("too many opcodes")
            if data is not None or code == op.OP_0:
                if active:
                    item = data or b""
                    if len(item) > MAX_STACK_ITEM:
                        raise ScriptError("push larger than 520 bytes")
                    self.stack.append(item)
                continue
            if code in (op.OP_IF, op.OP_NOTIF):
                value = False
                if active:
                    arg = self.pop()
                    # Segwit v0 MINIMALIF: the argument must be empty or exactly 0x01.
                    if arg not in (b"", b"\x01"):
                        raise ScriptError("IF argument is not minimal (empty or 0x01)")
                    value = _true(arg) if code == op.OP_IF else not _true(arg)
                executing.append(value)
                continue
            if code == op.OP_ELSE:
                if not executing:
                    raise ScriptError("ELSE without IF")
                executing[-1] = not executing[-1]
                continue
            if code == op.OP_ENDIF:
                if not executing:
                    raise ScriptError("ENDIF without IF")
                executing.pop()
                continue
            if active:
                self.step(code)
            if len(self.stack) + len(self.alt) > 1000:
                raise ScriptError("stack too large")
        if executing:
            raise ScriptError("unbalanced IF")

    def step(self, code: int) -> None:
        s = self.stack
        if code == op.OP_1NEGATE or op.OP_1 <= code <= op.OP_16:
            s.append(encode_num(-1 if code == op.OP_1NEGATE else code - op.OP_1 + 1))
        elif code in (op.OP_NOP, op.OP_NOP1):
            pass
        elif code == op.OP_VERIFY:
            if not _true(self.pop()):
                raise ScriptError("VERIFY failed")
        elif code == op.OP_RETURN:
            raise ScriptError("OP_RETURN")
        elif code == op.OP_TOALTSTACK:
            self.alt.append(self.pop())
        elif code == op.OP_FROMALTSTACK:
            if not self.alt:
                raise ScriptError("alt stack underflow")
            s.append(self.alt.pop())
        elif code == op.OP_2DROP:
            self.pop()
            self.pop()
        elif code == op.OP_2DUP:
            if len(s) < 2:
                raise ScriptError("stack underflow")
            s.extend(s[-2:])
        elif code == op.OP_IFDUP:
            if not s:
                raise ScriptError("stack underflow")
            if _true(s[-1]):
                s.append(s[-1])
        elif code == op.OP_DEPTH:
            s.append(encode_num(len(s)))
        elif code == op.OP_DROP:
            self.pop()
        elif code == op.OP_DUP:
            if not s:
                raise ScriptError("stack underflow")
            s.append(s[-1])
        elif code == op.OP_NIP:
            top = self.pop()
            self.pop()
            s.append(top)
        elif code == op.OP_OVER:
            if len(s) < 2:
                raise ScriptError("stack underflow")
            s.append(s[-2])
        elif code == op.OP_ROT:
            if len(s) < 3:
                raise ScriptError("stack underflow")
            s.append(s.pop(-3))
        elif code == op.OP_SWAP:
            if len(s) < 2:
                raise ScriptError("stack underflow")
            s[-1], s[-2] = s[-2], s[-1]
        elif code == op.OP_TUCK:
            top, second = self.pop(), self.pop()
            s.extend((top, second, top))
        elif code == op.OP_SIZE:
            if not s:
                raise ScriptError("stack underflow")
            s.append(encode_num(len(s[-1])))
        elif code in (op.OP_EQUAL, op.OP_EQUALVERIFY):
            equal = self.pop() == self.pop()
            if code == op.OP_EQUALVERIFY:
                if not equal:
                    raise ScriptError("EQUALVERIFY failed")
            else:
                s.append(_bool(equal))
        elif code in (op.OP_1ADD, op.OP_1SUB, op.OP_NOT, op.OP_0NOTEQUAL):
            n = self.pop_num()
            result = {op.OP_1ADD: n + 1, op.OP_1SUB: n - 1, op.OP_NOT: int(n == 0), op.OP_0NOTEQUAL: int(n != 0)}[code]
            s.append(encode_num(result))
        elif code in (op.OP_ADD, op.OP_SUB, op.OP_BOOLAND, op.OP_BOOLOR, op.OP_NUMEQUAL, op.OP_NUMEQUALVERIFY,
                      op.OP_LESSTHAN, op.OP_GREATERTHAN, op.OP_MIN, op.OP_MAX):
            b, a = self.pop_num(), self.pop_num()
            result = {
                op.OP_ADD: a + b, op.OP_SUB: a - b, op.OP_BOOLAND: int(a != 0 and b != 0),
                op.OP_BOOLOR: int(a != 0 or b != 0), op.OP_NUMEQUAL: int(a == b), op.OP_NUMEQUALVERIFY: int(a == b),
                op.OP_LESSTHAN: int(a < b), op.OP_GREATERTHAN: int(a > b), op.OP_MIN: min(a, b), op.OP_MAX: max(a, b),
            }[code]
            if code == op.OP_NUMEQUALVERIFY:
                if not result:
                    raise ScriptError("NUMEQUALVERIFY failed")
            else:
                s.append(encode_num(result))
        elif code == op.OP_WITHIN:
            high, low, x = self.pop_num(), self.pop_num(), self.pop_num()
            s.append(_bool(low <= x < high))
        elif code in (op.OP_SHA256, op.OP_HASH160, op.OP_RIPEMD160, op.OP_HASH256):
            item = self.pop()
            fn = {op.OP_SHA256: sha256, op.OP_HASH160: hash160, op.OP_RIPEMD160: ripemd160, op.OP_HASH256: sha256d}[code]
            s.append(fn(item))
        elif code in (op.OP_CHECKSIG, op.OP_CHECKSIGVERIFY):
            pubkey, signature = self.pop(), self.pop()
            ok = self.check_sig(signature, pubkey)
            if code == op.OP_CHECKSIGVERIFY:
                if not ok:
                    raise ScriptError("CHECKSIGVERIFY failed")
            else:
                s.append(_bool(ok))
        elif code in (op.OP_CHECKMULTISIG, op.OP_CHECKMULTISIGVERIFY):
            self.check_multisig(code == op.OP_CHECKMULTISIGVERIFY)
        elif code == op.OP_CHECKLOCKTIMEVERIFY:
            self.check_locktime()
        elif code == op.OP_CHECKSEQUENCEVERIFY:
            self.check_sequence()
        else:
            raise ScriptError(f"opcode 0x{code:02x} is not supported by this interpreter")

    def check_multisig(self, verify: bool) -> None:
        n = self.pop_num()
        if not 0 <= n <= 20:
            raise ScriptError("CHECKMULTISIG key count out of range")
        pubkeys = [self.pop() for _ in range(n)]
        m = self.pop_num()
        if not 0 <= m <= n:
            raise ScriptError("CHECKMULTISIG signature count out of range")
        signatures = [self.pop() for _ in range(m)]
        if self.pop() != b"":
            raise ScriptError("CHECKMULTISIG dummy element must be empty (NULLDUMMY)")
        # Signatures must match keys in order (both were pushed in script order).
        key_i, ok = 0, True
        for signature in signatures:
            matched = False
            while key_i < len(pubkeys) and not matched:
                try:
                    matched = self.check_sig(signature, pubkeys[key_i])
                except ScriptError as exc:
                    if "does not verify" not in str(exc):
                        raise
                key_i += 1
            if not matched:
                ok = False
                break
        if not ok and any(signatures):
            raise ScriptError("signature does not verify")  # NULLFAIL
        if verify:
            if not ok:
                raise ScriptError("CHECKMULTISIGVERIFY failed")
        else:
            self.stack.append(_bool(ok))

    def check_locktime(self) -> None:
        if not self.stack:
            raise ScriptError("stack underflow")
        try:
            value = decode_num(self.stack[-1], 5)
        except ValueError as exc:
            raise ScriptError(str(exc)) from None
        if value < 0:
            raise ScriptError("negative locktime")
        locktime = self.tx.locktime
        if (value < LOCKTIME_THRESHOLD) != (locktime < LOCKTIME_THRESHOLD):
            raise ScriptError("CHECKLOCKTIMEVERIFY: locktime types differ (height vs time)")
        if value > locktime:
            raise ScriptError(f"CHECKLOCKTIMEVERIFY: transaction locktime {locktime} is below {value}")
        if self.tx.inputs[self.index].sequence == 0xFFFFFFFF:
            raise ScriptError("CHECKLOCKTIMEVERIFY: input sequence is final")

    def check_sequence(self) -> None:
        if not self.stack:
            raise ScriptError("stack underflow")
        try:
            value = decode_num(self.stack[-1], 5)
        except ValueError as exc:
            raise ScriptError(str(exc)) from None
        if value < 0:
            raise ScriptError("negative relative locktime")
        if value & SEQUENCE_DISABLE_FLAG:
            return
        sequence = self.tx.inputs[self.index].sequence
        if self.tx.version < 2:
            raise ScriptError("CHECKSEQUENCEVERIFY needs transaction version 2")
        if sequence & SEQUENCE_DISABLE_FLAG:
            raise ScriptError("CHECKSEQUENCEVERIFY: input sequence disables relative locktime")
        if (value & SEQUENCE_TYPE_FLAG) != (sequence & SEQUENCE_TYPE_FLAG):
            raise ScriptError("CHECKSEQUENCEVERIFY: relative locktime types differ")
        if value & SEQUENCE_MASK > sequence & SEQUENCE_MASK:
            raise ScriptError(f"CHECKSEQUENCEVERIFY: input sequence {sequence & SEQUENCE_MASK} is below {value & SEQUENCE_MASK}")


def _verify_key_path(tx: Transaction, index: int, output_key: bytes, witness: list[bytes],
                     spent_outputs: Sequence[TxOut] | None) -> None:
    """BIP 341 key path: after an optional annex, exactly one item, a BIP 340 signature."""
    annex = None
    if len(witness) >= 2 and witness[-1][:1] == b"\x50":
        annex = witness.pop()
    if len(witness) != 1:
        raise ScriptError("P2TR script path spends are not supported on this chain (key path only)")
    signature = witness[0]
    if len(signature) == 64:
        sighash_type = 0
    elif len(signature) == 65 and signature[64] != 0:
        sighash_type = signature[64]
    else:
        raise ScriptError(f"P2TR key path signature must be 64 bytes, or 65 with a non-zero type "
                          f"(got {len(signature)} bytes)")
    if spent_outputs is None:
        raise ScriptError("P2TR spend checked without every input's spent output (BIP 341 signs them all)")
    try:
        sighash = bip341_sighash(tx, index, spent_outputs, sighash_type, annex)
    except ValueError as exc:
        raise ScriptError(str(exc)) from None
    if not schnorr_verify(output_key, signature[:64], sighash):
        raise ScriptError("P2TR key path signature does not verify")


def verify_input(tx: Transaction, index: int, spent: TxOut, spent_outputs: Sequence[TxOut] | None = None) -> None:
    """Run the witness of input ``index`` against the output it spends; raises ScriptError.

    ``spent_outputs`` (the outputs every input spends, in order) is needed for P2TR inputs.
    """
    txin = tx.inputs[index]
    spk = spent.script_pubkey
    if txin.script_sig:
        raise ScriptError("native segwit inputs must have an empty scriptSig")
    witness = list(txin.witness)
    if len(spk) == 22 and spk[:2] == b"\x00\x14":
        if len(witness) != 2:
            raise ScriptError("P2WPKH witness must have exactly 2 items")
        signature, pubkey = witness
        if hash160(pubkey) != spk[2:]:
            raise ScriptError("P2WPKH public key does not match the output")
        machine = _Machine(tx, index, spent.value_sat, op.p2pkh_script_code(spk[2:]))
        if not machine.check_sig(signature, pubkey):
            raise ScriptError("signature does not verify")
        return
    if len(spk) == 34 and spk[:2] == b"\x00\x20":
        if not witness:
            raise ScriptError("P2WSH witness is empty")
        witness_script = witness.pop()
        if sha256(witness_script) != spk[2:]:
            raise ScriptError("witness script does not match the P2WSH output")
        if len(witness_script) > 10_000 or any(len(item) > MAX_STACK_ITEM for item in witness):
            raise ScriptError("witness too large")
        machine = _Machine(tx, index, spent.value_sat, witness_script)
        machine.stack = witness
        machine.run(witness_script)
        if len(machine.stack) != 1:
            raise ScriptError(f"script left {len(machine.stack)} items on the stack (must be exactly 1)")
        if not _true(machine.stack[0]):
            raise ScriptError("script evaluated to false")
        return
    if len(spk) == 34 and spk[:2] == b"\x51\x20":
        _verify_key_path(tx, index, spk[2:], witness, spent_outputs)
        return
    raise ScriptError("only P2WPKH, P2WSH and P2TR (key path) outputs can be spent on this chain")
