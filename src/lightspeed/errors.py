"""One exception hierarchy for all of Lightspeed.

Two kinds of failure are kept apart, as h11 does:

* Bad *input* (an invoice string, bytes from a peer, a transaction) raises a
  :class:`DecodeError` subclass that names the offending field and the reason.
  At the peer boundary these become BOLT 1 ``warning``/``error`` messages.
* *Misuse* of the library by the caller (building an invoice without a payment
  hash, asking a state machine for an illegal transition) raises
  :class:`UsageError`.

Everything derives from :class:`LightspeedError`, so callers can catch one type.
"""

from __future__ import annotations


class LightspeedError(Exception):
    """Base class of every error Lightspeed raises on purpose."""


class DecodeError(LightspeedError, ValueError):
    """Input could not be decoded or violates the spec.

    ``field`` names what was wrong (``"amount"``, ``"tagged field n"``,
    ``"act 2 mac"``), ``reason`` says why, in words a user can act on.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class SignatureError(DecodeError):
    """A signature is malformed or does not verify."""


class HandshakeError(DecodeError):
    """A BOLT 8 handshake act is invalid; the connection must be closed."""


class OnionError(DecodeError):
    """An onion packet or onion failure cannot be processed."""


class PeerProtocolError(LightspeedError):
    """A peer broke the protocol: answered with a BOLT 1 warning/error, then disconnect.

    ``channel_id`` is the 32-byte channel the violation concerns, or ``None``
    for the connection as a whole (all-zero channel id on the wire).
    """

    def __init__(self, reason: str, channel_id: bytes | None = None) -> None:
        self.reason = reason
        self.channel_id = channel_id
        super().__init__(reason)


class UsageError(LightspeedError, ValueError):
    """The caller used the API wrongly (a local bug, not bad remote input)."""


class RejectedTransaction(LightspeedError):
    """The chain refused a transaction; the message says exactly which rule failed."""


class StorageUnavailable(LightspeedError):
    """A file that holds state cannot be read or written: the disk is full, the file is read-only,
    an I/O error. ``path`` names the file and ``reason`` says why; the operation did nothing and
    can be retried once the operator fixed the file (the REST APIs answer 503).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


class ChainError(LightspeedError):
    """A chain backend could not answer (unknown block, missing transaction, ...)."""


class ChainBusy(ChainError):
    """The chain is held locked by another process: nothing was done, the same call can be retried."""


class ChainUnavailable(ChainError, StorageUnavailable):
    """The chain file cannot take a write (full disk, read-only file, I/O error): nothing was done."""


class RejectedBlock(LightspeedError):
    """The chain refused a submitted block or a reorganisation; the message names the rule. Nothing changed."""


class PaymentError(LightspeedError):
    """A payment could not be made or was refused (e.g. the double-pay guard)."""


class ChannelOpenFailed(LightspeedError):
    """A channel we were opening ended before the peer signed its funding: nothing was funded.

    The message says why (the peer's error text, our refusal of its accept_channel, or the
    connection dropping), so the caller is told at once instead of after the opening's timeout.
    """


_STORAGE_FAULTS = (("SQLITE_FULL", "the disk is full"), ("SQLITE_READONLY", "the file is read-only"),
                   ("SQLITE_IOERR", "an I/O error"), ("SQLITE_CANTOPEN", "the file cannot be opened"),
                   ("SQLITE_PERM", "permission denied"))


def storage_fault(exc: Exception) -> str | None:
    """The reason an SQLite error means its file cannot be used as it is (full, read-only, I/O), else None."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for prefix, reason in _STORAGE_FAULTS:
        if name.startswith(prefix):
            return f"{reason} ({exc})"
    return None
