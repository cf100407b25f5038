"""Typed payment hop payloads (the BOLT 4 ``payload`` TLV stream) and the reader's rules.

Decoding checks the TLV stream and each field's encoding; :func:`check_hop_payload`
then applies the presence rules that depend on where the hop sits (intermediate
or final, inside a blinded path or not). Both raise :class:`InvalidHopPayload`,
which carries the TLV type so the hop can answer ``invalid_onion_payload``.
"""

from __future__ import annotations

from dataclasses import dataclass

from coincurve import PublicKey

from lightspeed.codec.tlv import decode_tlv_stream, decode_tu, encode_tlv_stream, encode_tu
from lightspeed.errors import DecodeError, OnionError, UsageError

AMT_TO_FORWARD = 2
OUTGOING_CLTV_VALUE = 4
SHORT_CHANNEL_ID = 6
PAYMENT_DATA = 8
ENCRYPTED_RECIPIENT_DATA = 10
CURRENT_PATH_KEY = 12
PAYMENT_METADATA = 16
TOTAL_AMOUNT_MSAT = 18
#: keysend's preimage record; the async-payments draft (bolts#1149, LDK's blinded receive payload)
#: lets it reach the final hop of a blinded path: a static invoice is paid with a preimage the payer chose.
KEYSEND_PREIMAGE = 5482373484
_KNOWN = frozenset(
    {AMT_TO_FORWARD, OUTGOING_CLTV_VALUE, SHORT_CHANNEL_ID, PAYMENT_DATA, ENCRYPTED_RECIPIENT_DATA,
     CURRENT_PATH_KEY, PAYMENT_METADATA, TOTAL_AMOUNT_MSAT}
)


class InvalidHopPayload(OnionError):
    """The hop payload was not understood or is incomplete (answer ``invalid_onion_payload``).

    ``tlv_type`` is the offending record type when one can be named (else ``None``).
    """

    def __init__(self, field: str, reason: str, tlv_type: int | None = None) -> None:
        super().__init__(field, reason)
        self.tlv_type = tlv_type


def check_point(data: bytes, field: str) -> bytes:
    """A 33-byte compressed point on the curve, or :class:`OnionError`."""
    if len(data) != 33 or data[0] not in (2, 3):
        raise OnionError(field, "not a 33-byte compressed point")
    try:
        PublicKey(data)
    except ValueError:
        raise OnionError(field, "not a point on the curve") from None
    return data


@dataclass(frozen=True)
class HopPayload:
    """One hop's instructions. ``None`` means the record is absent."""

    amt_to_forward_msat: int | None = None
    outgoing_cltv_value: int | None = None
    short_channel_id: int | None = None
    payment_secret: bytes | None = None
    total_msat: int | None = None
    payment_metadata: bytes | None = None
    encrypted_recipient_data: bytes | None = None
    current_path_key: bytes | None = None
    total_amount_msat: int | None = None
    #: other records (type, value), e.g. keysend preimages; odd types only when decoded
    custom_records: tuple[tuple[int, bytes], ...] = ()

    def to_bytes(self) -> bytes:
        """The TLV stream (without the onion's length prefix)."""
        records: list[tuple[int, bytes]] = list(self.custom_records)
        if self.amt_to_forward_msat is not None:
            records.append((AMT_TO_FORWARD, encode_tu(self.amt_to_forward_msat)))
        if self.outgoing_cltv_value is not None:
            records.append((OUTGOING_CLTV_VALUE, encode_tu(self.outgoing_cltv_value)))
        if self.short_channel_id is not None:
            records.append((SHORT_CHANNEL_ID, self.short_channel_id.to_bytes(8, "big")))
        if (self.payment_secret is None) != (self.total_msat is None):
            raise UsageError("payment_secret and total_msat go together (payment_data)")
        if self.payment_secret is not None and self.total_msat is not None:
            if len(self.payment_secret) != 32:
                raise UsageError("payment_secret must be 32 bytes")
            records.append((PAYMENT_DATA, self.payment_secret + encode_tu(self.total_msat)))
        if self.encrypted_recipient_data is not None:
            records.append((ENCRYPTED_RECIPIENT_DATA, self.encrypted_recipient_data))
        if self.current_path_key is not None:
            records.append((CURRENT_PATH_KEY, self.current_path_key))
        if self.payment_metadata is not None:
            records.append((PAYMENT_METADATA, self.payment_metadata))
        if self.total_amount_msat is not None:
            records.append((TOTAL_AMOUNT_MSAT, encode_tu(self.total_amount_msat)))
        try:
            return encode_tlv_stream(records)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    @classmethod
    def from_bytes(cls, data: bytes, understood: frozenset[int] = frozenset()) -> HopPayload:
        """Decode the TLV stream; unknown even types and malformed values raise :class:`InvalidHopPayload`.

        ``understood``: further (even) record types the caller interprets itself, kept in
        ``custom_records`` instead of being refused (a final node that supports keysend
        or AMP passes theirs).
        """
        try:
            records = decode_tlv_stream(data, _KNOWN | understood, field="payload")
        except DecodeError as exc:
            raise InvalidHopPayload(exc.field, exc.reason) from None
        values: dict[str, object] = {}
        try:
            for tlv_type, value in records.items():
                if tlv_type == AMT_TO_FORWARD:
                    values["amt_to_forward_msat"] = decode_tu(value, 8, "amt_to_forward")
                elif tlv_type == OUTGOING_CLTV_VALUE:
                    values["outgoing_cltv_value"] = decode_tu(value, 4, "outgoing_cltv_value")
                elif tlv_type == SHORT_CHANNEL_ID:
                    if len(value) != 8:
                        raise DecodeError("short_channel_id", f"{len(value)} bytes, expected 8")
                    values["short_channel_id"] = int.from_bytes(value, "big")
                elif tlv_type == PAYMENT_DATA:
                    if len(value) < 32:
                        raise DecodeError("payment_data", "shorter than the 32-byte payment_secret")
                    values["payment_secret"] = value[:32]
                    values["total_msat"] = decode_tu(value[32:], 8, "payment_data total_msat")
                elif tlv_type == ENCRYPTED_RECIPIENT_DATA:
                    values["encrypted_recipient_data"] = value
                elif tlv_type == CURRENT_PATH_KEY:
                    values["current_path_key"] = check_point(value, "current_path_key")
                elif tlv_type == PAYMENT_METADATA:
                    values["payment_metadata"] = value
                elif tlv_type == TOTAL_AMOUNT_MSAT:
                    values["total_amount_msat"] = decode_tu(value, 8, "total_amount_msat")
        except DecodeError as exc:
            raise InvalidHopPayload(exc.field, exc.reason, tlv_type) from None
        custom = tuple((t, v) for t, v in records.items() if t not in _KNOWN)
        return cls(custom_records=custom, **values)  # type: ignore[arg-type]

    def present_types(self) -> set[int]:
        present = {t for t, _ in self.custom_records}
        for tlv_type, value in (
            (AMT_TO_FORWARD, self.amt_to_forward_msat), (OUTGOING_CLTV_VALUE, self.outgoing_cltv_value),
            (SHORT_CHANNEL_ID, self.short_channel_id), (PAYMENT_DATA, self.payment_secret),
            (ENCRYPTED_RECIPIENT_DATA, self.encrypted_recipient_data), (CURRENT_PATH_KEY, self.current_path_key),
            (PAYMENT_METADATA, self.payment_metadata), (TOTAL_AMOUNT_MSAT, self.total_amount_msat),
        ):
            if value is not None:
                present.add(tlv_type)
        return present


_BLINDED_FORWARD_ALLOWED = frozenset({ENCRYPTED_RECIPIENT_DATA, CURRENT_PATH_KEY})
_BLINDED_FINAL_ALLOWED = _BLINDED_FORWARD_ALLOWED | {AMT_TO_FORWARD, OUTGOING_CLTV_VALUE, TOTAL_AMOUNT_MSAT,
                                                    KEYSEND_PREIMAGE}


def check_hop_payload(payload: HopPayload, *, is_final: bool, update_path_key: bool) -> None:
    """Apply the BOLT 4 reader's presence rules; raise :class:`InvalidHopPayload` on the first violation.

    ``update_path_key`` says whether the incoming ``update_add_htlc`` carried a
    ``path_key``. Amount/expiry comparisons against the HTLC belong to the
    channel layer and are not checked here.
    """
    present = payload.present_types()
    if payload.encrypted_recipient_data is not None:
        if update_path_key and payload.current_path_key is not None:
            # BOLT #4: If `path_key` is set in the incoming `update_add_htlc`:
            # MUST return an error if `current_path_key` is present.
            raise InvalidHopPayload("current_path_key", "present although the HTLC carries a path_key", CURRENT_PATH_KEY)
        if not update_path_key and payload.current_path_key is None:
            # BOLT #4: Otherwise: MUST return an error if `current_path_key` is not present.
            raise InvalidHopPayload("current_path_key", "missing at the introduction point", CURRENT_PATH_KEY)
        if not is_final:
            # BOLT #4: If it is not the final node: MUST return an error if the payload contains
            # other tlv fields than `encrypted_recipient_data` and `current_path_key`.
            extra = sorted(present - _BLINDED_FORWARD_ALLOWED)
            if extra:
                raise InvalidHopPayload("payload", f"type {extra[0]} not allowed in a blinded forward", extra[0])
        else:
            # BOLT #4: If it is the final node: MUST return an error if the payload contains other
            # tlv fields than ... or if `amt_to_forward`, `outgoing_cltv_value` or
            # `total_amount_msat` are not present.
            extra = sorted(present - _BLINDED_FINAL_ALLOWED)
            if extra:
                raise InvalidHopPayload("payload", f"type {extra[0]} not allowed at a blinded final hop", extra[0])
            for tlv_type, name in ((AMT_TO_FORWARD, "amt_to_forward"), (OUTGOING_CLTV_VALUE, "outgoing_cltv_value"),
                                   (TOTAL_AMOUNT_MSAT, "total_amount_msat")):
                if tlv_type not in present:
                    raise InvalidHopPayload(name, "missing at a blinded final hop", tlv_type)
        return
    # BOLT #4: Otherwise (it is not part of a blinded route): MUST return an error if `path_key`
    # is set in the incoming `update_add_htlc` or `current_path_key` is present.
    if update_path_key:
        raise InvalidHopPayload("encrypted_recipient_data", "missing although the HTLC carries a path_key",
                                ENCRYPTED_RECIPIENT_DATA)
    if payload.current_path_key is not None:
        raise InvalidHopPayload("current_path_key", "present outside a blinded route", CURRENT_PATH_KEY)
    # BOLT #4: MUST return an error if `amt_to_forward` or `outgoing_cltv_value` are not present.
    if payload.amt_to_forward_msat is None:
        raise InvalidHopPayload("amt_to_forward", "missing", AMT_TO_FORWARD)
    if payload.outgoing_cltv_value is None:
        raise InvalidHopPayload("outgoing_cltv_value", "missing", OUTGOING_CLTV_VALUE)
    # BOLT #4: if it is not the final node: MUST return an error if `short_channel_id` is not present.
    if not is_final and payload.short_channel_id is None:
        raise InvalidHopPayload("short_channel_id", "missing at an intermediate hop", SHORT_CHANNEL_ID)


def final_total_msat(payload: HopPayload) -> int | None:
    """BOLT #4: the final node MUST treat `total_msat` as equal to `amt_to_forward` if absent."""
    if payload.total_msat is not None:
        return payload.total_msat
    if payload.total_amount_msat is not None:
        return payload.total_amount_msat
    return payload.amt_to_forward_msat
