"""The final node's decisions (BOLT 4): which incoming HTLCs to fulfil, which to fail, and why.

Sans-IO: the runtime feeds each irrevocably committed incoming HTLC whose onion says "you
are the final node" (:meth:`Receiver.receive`), the clock and the block height
(:meth:`Receiver.tick`), and the application's decisions on hold invoices; it gets back
values: :class:`Settle` (fulfil with this preimage), :class:`Fail` (with this BOLT 4 failure
message), and the events :class:`Received` and :class:`Held`.

Covered: invoices paid in one part or several (``basic_mpp``: an HTLC set completes when its
parts reach ``total_msat``; all its parts are fulfilled together, or all failed with
``mpp_timeout`` 60 s after the first arrived), hold invoices (the set is kept until the
application settles or cancels, and cancelled before the HTLCs come near expiry),
keysend (preimage in record 5482373484) and AMP (record 14, :mod:`.amp`). The double-pay
rule: once a payment hash is settled, further HTLCs for it are failed as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError
from lightspeed.onion.failure import FailureCode, FailureMessage
from lightspeed.onion.payload import HopPayload, final_total_msat
from lightspeed.payments.amp import AMP_RECORD_TYPE, AmpRecord, child_preimage, combine

KEYSEND_RECORD_TYPE = 5482373484
UNDERSTOOD_RECORDS = frozenset({AMP_RECORD_TYPE, KEYSEND_RECORD_TYPE})
MPP_TIMEOUT_SECONDS = 60
HOLD_SAFETY_BLOCKS = 12  # cancel a held set this close to its earliest expiry: never go on chain
KEYSEND_MIN_FINAL_CLTV = 18


@dataclass(frozen=True)
class IncomingPart:
    """An incoming HTLC addressed to us, with its decoded final-hop payload."""

    channel_id: bytes
    htlc_id: int
    amount_msat: int
    cltv_expiry: int
    payment_hash: bytes
    payload: HopPayload
    #: arrived over one of our blinded paths (its ``path_id`` gave ``payload.payment_secret``)
    blinded: bool = False


@dataclass(frozen=True)
class Receivable:
    """An invoice we issued. ``preimage`` is ``None`` for a hold invoice created from a hash."""

    payment_hash: bytes
    payment_secret: bytes
    amount_msat: int | None
    min_final_cltv_expiry: int
    expires_at: int
    preimage: bytes | None
    hold: bool = False
    amp: bool = False  # an AMP invoice: paid only by AMP shards (its payment_hash is a placeholder)
    blinded: bool = False  # paid only over the blinded paths we made for it (never handed out as BOLT 11)


@dataclass(frozen=True)
class Settle:
    part: IncomingPart
    preimage: bytes


@dataclass(frozen=True)
class Fail:
    part: IncomingPart
    failure: FailureMessage


@dataclass(frozen=True)
class Received:
    """A payment completed: ``kind`` is ``invoice``, ``keysend`` or ``amp`` (``key`` = set id)."""

    key: bytes
    amount_msat: int
    parts: int
    kind: str
    invoice_hash: bytes | None = None  # the AMP invoice an AMP payment paid, if any


@dataclass(frozen=True)
class Held:
    """A hold invoice's payment arrived in full: settle or cancel it."""

    payment_hash: bytes
    amount_msat: int
    parts: int


Decision = Settle | Fail | Received | Held


@dataclass
class _Set:
    total_msat: int
    first_arrival: float
    parts: list[IncomingPart] = field(default_factory=list)
    held: bool = False
    invoice_hash: bytes | None = None  # AMP sets paying an AMP invoice

    @property
    def amount_msat(self) -> int:
        return sum(p.payload.amt_to_forward_msat or 0 for p in self.parts)


class Receiver:
    def __init__(self, *, mpp_timeout: float = MPP_TIMEOUT_SECONDS, accept_keysend: bool = True,
                 accept_amp: bool = True) -> None:
        self.mpp_timeout, self.accept_keysend, self.accept_amp = mpp_timeout, accept_keysend, accept_amp
        self.invoices: dict[bytes, Receivable] = {}
        self.settled: set[bytes] = set()  # payment hashes (and AMP set ids) already paid
        self._sets: dict[bytes, _Set] = {}  # by payment hash, or by AMP set id

    def add(self, receivable: Receivable) -> None:
        self.invoices[receivable.payment_hash] = receivable

    # -- incoming ----------------------------------------------------------------------------

    def receive(self, part: IncomingPart, height: int, now: float) -> list[Decision]:
        payload = part.payload
        amt = payload.amt_to_forward_msat
        if amt is None or payload.outgoing_cltv_value is None:
            return [self._fail(part, FailureCode.INVALID_ONION_PAYLOAD, height)]
        # BOLT #4 final node: incoming amount_msat < amt_to_forward, cltv_expiry < outgoing_cltv_value.
        if part.amount_msat < amt:
            return [Fail(part, FailureMessage(FailureCode.FINAL_INCORRECT_HTLC_AMOUNT, htlc_msat=part.amount_msat))]
        if part.cltv_expiry < payload.outgoing_cltv_value:
            return [Fail(part, FailureMessage(FailureCode.FINAL_INCORRECT_CLTV_EXPIRY, cltv_expiry=part.cltv_expiry))]
        records = dict(payload.custom_records)
        if KEYSEND_RECORD_TYPE in records:
            return self._keysend(part, records[KEYSEND_RECORD_TYPE], height)
        if AMP_RECORD_TYPE in records:
            return self._amp(part, records[AMP_RECORD_TYPE], height, now)
        return self._invoice_part(part, height, now)

    def _keysend(self, part: IncomingPart, preimage: bytes, height: int) -> list[Decision]:
        if (not self.accept_keysend or len(preimage) != 32 or sha256(preimage) != part.payment_hash
                or part.payment_hash in self.settled or part.payment_hash in self.invoices
                or part.cltv_expiry < height + KEYSEND_MIN_FINAL_CLTV):
            return [self._unknown(part, height)]
        self.settled.add(part.payment_hash)
        return [Settle(part, preimage), Received(part.payment_hash, part.amount_msat, 1, "keysend")]

    def _invoice_part(self, part: IncomingPart, height: int, now: float) -> list[Decision]:
        invoice = self.invoices.get(part.payment_hash)
        payload = part.payload
        total = final_total_msat(payload)
        # BOLT #4: unknown hash, wrong or missing payment_secret, amount too low, expiry too
        # near: incorrect_or_unknown_payment_details (one code, so probing learns nothing).
        if (invoice is None or invoice.amp or invoice.blinded != part.blinded or part.payment_hash in self.settled
                or payload.payment_secret != invoice.payment_secret or total is None or now >= invoice.expires_at
                or part.cltv_expiry < height + invoice.min_final_cltv_expiry):
            return [self._unknown(part, height)]
        if invoice.amount_msat is not None and not invoice.amount_msat <= total <= 2 * invoice.amount_msat:
            return [self._unknown(part, height)]
        return self._add_to_set(part.payment_hash, part, total, height, now, invoice)

    def _add_to_set(self, key: bytes, part: IncomingPart, total: int, height: int, now: float,
                    invoice: Receivable | None, invoice_hash: bytes | None = None) -> list[Decision]:
        htlc_set = self._sets.get(key)
        if htlc_set is None:
            htlc_set = self._sets[key] = _Set(total, now, invoice_hash=invoice_hash)
        if htlc_set.held:
            return [self._unknown(part, height)]  # already complete and waiting: no more parts
        if htlc_set.total_msat != total:
            # BOLT #4: SHOULD fail the entire HTLC set if total_msat is not the same for all.
            del self._sets[key]
            return [self._unknown(p, height) for p in [*htlc_set.parts, part]]
        htlc_set.parts.append(part)
        if htlc_set.amount_msat < htlc_set.total_msat:
            return []  # MUST NOT fulfil any HTLC of an incomplete set
        if invoice is None:
            return self._complete_amp(key, htlc_set, height)
        if invoice.hold or invoice.preimage is None:
            htlc_set.held = True
            return [Held(key, htlc_set.amount_msat, len(htlc_set.parts))]
        return self._settle_set(key, htlc_set, invoice.preimage, "invoice")

    def _amp(self, part: IncomingPart, raw: bytes, height: int, now: float) -> list[Decision]:
        try:
            record = AmpRecord.from_bytes(raw)
        except DecodeError:
            return [self._fail(part, FailureCode.INVALID_ONION_PAYLOAD, height)]
        payload = part.payload
        total = final_total_msat(payload)
        if not self.accept_amp or record.set_id in self.settled or total is None or payload.payment_secret is None:
            return [self._unknown(part, height)]
        invoice = next((i for i in self.invoices.values() if i.payment_secret == payload.payment_secret), None)
        # Paying an AMP invoice: the set pays it once, by its amount rules, before it expires.
        if invoice is not None and (
                not invoice.amp or invoice.payment_hash in self.settled or now >= invoice.expires_at
                or (invoice.amount_msat is not None
                    and not invoice.amount_msat <= total <= 2 * invoice.amount_msat)):
            return [self._unknown(part, height)]
        if part.cltv_expiry < height + (invoice.min_final_cltv_expiry if invoice else KEYSEND_MIN_FINAL_CLTV):
            return [self._unknown(part, height)]
        return self._add_to_set(record.set_id, part, total, height, now, None,
                                invoice.payment_hash if invoice else None)

    def _complete_amp(self, set_id: bytes, htlc_set: _Set, height: int) -> list[Decision]:
        records = [AmpRecord.from_bytes(dict(p.payload.custom_records)[AMP_RECORD_TYPE]) for p in htlc_set.parts]
        root = combine([r.root_share for r in records])
        preimages = [child_preimage(root, r.root_share, r.child_index) for r in records]
        del self._sets[set_id]
        if any(sha256(pre) != p.payment_hash for pre, p in zip(preimages, htlc_set.parts, strict=True)):
            return [self._unknown(p, height) for p in htlc_set.parts]  # shares do not add up
        self.settled.add(set_id)
        if htlc_set.invoice_hash is not None:
            self.settled.add(htlc_set.invoice_hash)
        decisions: list[Decision] = [Settle(p, pre) for p, pre in zip(htlc_set.parts, preimages, strict=True)]
        return [*decisions, Received(set_id, htlc_set.amount_msat, len(htlc_set.parts), "amp",
                                     htlc_set.invoice_hash)]

    def _settle_set(self, key: bytes, htlc_set: _Set, preimage: bytes, kind: str) -> list[Decision]:
        del self._sets[key]
        self.settled.add(key)
        decisions: list[Decision] = [Settle(p, preimage) for p in htlc_set.parts]
        return [*decisions, Received(key, htlc_set.amount_msat, len(htlc_set.parts), kind)]

    # -- time and the application ------------------------------------------------------------

    def tick(self, now: float, height: int) -> list[Decision]:
        """Fail incomplete sets after the MPP timeout; cancel held sets nearing expiry."""
        decisions: list[Decision] = []
        for key, htlc_set in list(self._sets.items()):
            if not htlc_set.held and now - htlc_set.first_arrival >= self.mpp_timeout:
                del self._sets[key]
                decisions += [Fail(p, FailureMessage(FailureCode.MPP_TIMEOUT)) for p in htlc_set.parts]
            elif htlc_set.held and min(p.cltv_expiry for p in htlc_set.parts) - height <= HOLD_SAFETY_BLOCKS:
                del self._sets[key]
                decisions += [self._unknown(p, height) for p in htlc_set.parts]
        return decisions

    def settle_held(self, payment_hash: bytes, preimage: bytes) -> list[Decision]:
        """The application releases a held payment: fulfil every part with ``preimage``."""
        htlc_set = self._sets.get(payment_hash)
        if htlc_set is None or not htlc_set.held:
            raise KeyError(f"no held payment for {payment_hash.hex()}")
        if sha256(preimage) != payment_hash:
            raise ValueError("preimage: does not hash to the payment hash")
        return self._settle_set(payment_hash, htlc_set, preimage, "invoice")

    def cancel_held(self, payment_hash: bytes, height: int) -> list[Decision]:
        htlc_set = self._sets.pop(payment_hash, None)
        if htlc_set is None:
            raise KeyError(f"no held payment for {payment_hash.hex()}")
        return [self._unknown(p, height) for p in htlc_set.parts]

    @staticmethod
    def _unknown(part: IncomingPart, height: int) -> Fail:
        return Fail(part, FailureMessage(FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS,
                                         htlc_msat=part.amount_msat, height=height))

    @staticmethod
    def _fail(part: IncomingPart, code: FailureCode, height: int) -> Fail:
        if code is FailureCode.INVALID_ONION_PAYLOAD:
            return Fail(part, FailureMessage(code, tlv_type=2, offset=0))
        return Fail(part, FailureMessage(code, htlc_msat=part.amount_msat, height=height))
