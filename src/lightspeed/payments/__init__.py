"""Payments: the sender's retry loop (sans-IO); MPP, AMP, keysend and the receiver build on it."""

from lightspeed.payments.attempts import (
    Action,
    Attempt,
    FailureReport,
    PaymentAttempts,
    PaymentFailed,
    PaymentSucceeded,
    SendAttempt,
)

__all__ = [
    "Action",
    "Attempt",
    "FailureReport",
    "PaymentAttempts",
    "PaymentFailed",
    "PaymentSucceeded",
    "SendAttempt",
]
