"""Asynchronous payments: codecs of both flows, the static invoice, and the LSP's hold policy (sans-IO)."""

from lightspeed.asyncpay.messages import (
    ASYNC_PAYLOAD_TYPES,
    HELD_HTLC_AVAILABLE,
    RELEASE_HELD_HTLC,
    STATIC_INVOICE,
    AsyncPaymentNotice,
    EmptyPayload,
    HoldHtlcsRequest,
    decode_payload,
    payment_unblock_from,
    payment_unblock_record,
)
from lightspeed.asyncpay.policy import (
    HeldHtlc,
    HoldBook,
    HoldLimits,
    HoldRefused,
    HoldRegistration,
    HoldState,
    ReleaseKey,
    ReleaseRefused,
)
from lightspeed.asyncpay.static_invoice import StaticInvoice, sign_static_invoice

__all__ = [
    "ASYNC_PAYLOAD_TYPES", "HELD_HTLC_AVAILABLE", "RELEASE_HELD_HTLC", "STATIC_INVOICE",
    "AsyncPaymentNotice", "EmptyPayload", "HeldHtlc", "HoldBook", "HoldHtlcsRequest", "HoldLimits",
    "HoldRefused", "HoldRegistration", "HoldState", "ReleaseKey", "ReleaseRefused", "StaticInvoice", "decode_payload",
    "payment_unblock_from", "payment_unblock_record", "sign_static_invoice",
]
